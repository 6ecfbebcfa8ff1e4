/**
 * Dedup cache for messages with more than one reference: readers of the same
 * message get the same Buffer object rather than one copy each (the
 * reference's reason for its cache: no memory explosion on fan-out).
 *
 * Unlike the reference's counted cache, entries are weak: a body stays shared
 * exactly as long as some reader still holds it, so a message that one queue
 * never consumes cannot pin its body in memory. Callers must treat the
 * returned buffers as read-only.
 */
export class DedupCache {
  private readonly map = new Map<string, WeakRef<Buffer>>();
  private readonly registry = new FinalizationRegistry<string>((key) => {
    const ref = this.map.get(key);
    if (ref && ref.deref() === undefined) this.map.delete(key);
  });

  get(key: string): Buffer | undefined {
    const ref = this.map.get(key);
    if (!ref) return undefined;
    const b = ref.deref();
    if (b === undefined) this.map.delete(key);
    return b;
  }

  /** Shares `body` under `key`; returns the buffer already shared if there is one. */
  share(key: string, body: Buffer): Buffer {
    const cur = this.get(key);
    if (cur) return cur;
    this.map.set(key, new WeakRef(body));
    this.registry.register(body, key);
    return body;
  }

  delete(key: string): void {
    this.map.delete(key);
  }

  get size(): number {
    return this.map.size;
  }
}

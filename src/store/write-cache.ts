/**
 * The current file's write-back cache: bodies written by clients, readable at
 * once, before (and whether or not) the store has appended them. `pending`
 * counts writes of the id not yet processed by the store. Entries are dropped
 * when the file rolls (once no write is pending) or when the message is gone,
 * so the cache never holds more than about one file's worth of bodies.
 */
interface Entry {
  body: Buffer;
  pending: number;
}

export class WriteCache {
  private map = new Map<string, Entry>();
  private bodyBytes = 0;

  add(key: string, body: Buffer): void {
    const e = this.map.get(key);
    if (e) {
      e.pending++;
      return;
    }
    this.map.set(key, { body, pending: 1 });
    this.bodyBytes += body.length;
  }

  /** The store has processed one write of `key`. */
  written(key: string): void {
    const e = this.map.get(key);
    if (e && e.pending > 0) e.pending--;
  }

  get(key: string): Buffer | undefined {
    return this.map.get(key)?.body;
  }

  /** Drops the entry unless a write of it is still pending. */
  dropIfIdle(key: string): void {
    const e = this.map.get(key);
    if (e && e.pending === 0) {
      this.map.delete(key);
      this.bodyBytes -= e.body.length;
    }
  }

  /**
   * At a roll: drop everything already appended. The few entries with a
   * write pending move to a new map; deleting a file's worth of entries one
   * by one (~16,000 of 1 KiB) held the event loop for ~10 ms at every roll.
   */
  dropAllIdle(): void {
    const old = this.map;
    this.map = new Map();
    this.bodyBytes = 0;
    for (const [k, e] of old) {
      if (e.pending === 0) continue;
      this.map.set(k, e);
      this.bodyBytes += e.body.length;
    }
  }

  get size(): number {
    return this.map.size;
  }

  get bytes(): number {
    return this.bodyBytes;
  }
}

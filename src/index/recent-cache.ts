/**
 * A bounded cache of recently used entries, in two generations: new entries
 * and hits go into the young map; when it is full it becomes the old map and
 * the previous old map is dropped. Every operation is O(1) and at most
 * `capacity` entries are held, while whatever was used within the last
 * capacity/2 insertions is kept. (Evicting the first key of one big Map is
 * not O(1) in V8: deleted slots at its front are scanned again and again.)
 */
export class RecentCache<V> {
  private young = new Map<string, V>();
  private old = new Map<string, V>();
  private readonly half: number;

  constructor(capacity: number) {
    this.half = Math.max(1, Math.floor(capacity / 2));
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  get(k: string): V | undefined {
    const y = this.young.get(k);
    if (y !== undefined) return y;
    const o = this.old.get(k);
    if (o !== undefined) {
      this.old.delete(k);
      this.setYoung(k, o);
    }
    return o;
  }

  set(k: string, v: V): void {
    this.old.delete(k);
    this.setYoung(k, v);
  }

  delete(k: string): void {
    this.young.delete(k);
    this.old.delete(k);
  }

  clear(): void {
    this.young.clear();
    this.old.clear();
  }

  private setYoung(k: string, v: V): void {
    if (!this.young.has(k) && this.young.size >= this.half) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(k, v);
  }
}

/**
 * The write-back cache: bodies written by clients, readable at once, before
 * (and whether or not) the store has appended them. `pending` counts writes
 * of the id not yet processed by the store.
 *
 * An entry goes as soon as its record has reached the OS (a read of it is
 * then a pread the page cache answers), when the message is gone, or at the
 * roll of its file, whichever comes first; an entry with a write pending
 * stays until the roll after it. Holding every body until the roll kept up
 * to a file's worth (16 MiB a store) alive for nothing, long enough for V8 to
 * move each body to the old generation, where only a full GC frees it.
 */
interface Entry {
  body: Buffer;
  pending: number;
}

/** An appended record whose bytes have not reached the OS yet. */
interface Unwritten {
  key: string;
  entry: Entry;
  file: number;
  end: number;
}

export class WriteCache {
  private map = new Map<string, Entry>();
  private bodyBytes = 0;
  /** Appended entries in append order (so in file order), from `head` on. */
  private unwritten: Unwritten[] = [];
  private head = 0;

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

  /** The store appended `key`'s record to `file`, ending at `end`. */
  appended(key: string, file: number, end: number): void {
    const entry = this.map.get(key);
    if (entry) this.unwritten.push({ key, entry, file, end });
  }

  /** Every byte of `file` below `offset` has reached the OS: the idle entries of those records go. */
  reached(file: number, offset: number): void {
    const u = this.unwritten;
    let i = this.head;
    for (; i < u.length; i++) {
      const x = u[i];
      if (x.file === file && x.end > offset) break;
      if (x.entry.pending === 0 && this.map.get(x.key) === x.entry) this.remove(x.key, x.entry);
    }
    if (i === u.length) {
      this.unwritten = [];
      this.head = 0;
    } else {
      this.head = i;
      if (i > 1024 && i * 2 > u.length) {
        this.unwritten = u.slice(i);
        this.head = 0;
      }
    }
  }

  get(key: string): Buffer | undefined {
    return this.map.get(key)?.body;
  }

  /** Drops the entry unless a write of it is still pending. */
  dropIfIdle(key: string): void {
    const e = this.map.get(key);
    if (e && e.pending === 0) this.remove(key, e);
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
    this.unwritten = [];
    this.head = 0;
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

  private remove(key: string, e: Entry): void {
    this.map.delete(key);
    this.bodyBytes -= e.body.length;
  }
}

/**
 * Read handles on segment files, shared by every reader, bounded in number
 * (least recently used closed first). A handle in use is never closed under
 * its user: invalidation (file replaced by compaction, or deleted) closes it
 * once the last user is done.
 */
import { promises as fsp } from 'fs';
import { segmentPath } from './segment-file';

interface Entry {
  open: Promise<fsp.FileHandle>;
  users: number;
  stale: boolean;
}

export class HandleCache {
  private readonly entries = new Map<number, Entry>();

  constructor(
    private readonly dir: string,
    private readonly max: number,
  ) {}

  async use<T>(file: number, fn: (fh: fsp.FileHandle) => Promise<T>): Promise<T> {
    let e = this.entries.get(file);
    if (e && !e.stale) {
      this.entries.delete(file); // re-insert: most recently used last
      this.entries.set(file, e);
    } else {
      const open = fsp.open(segmentPath(this.dir, file), 'r');
      open.catch(() => undefined);
      e = { open, users: 0, stale: false };
      this.entries.set(file, e);
    }
    const entry = e;
    // Counted before evicting: eviction closes only unused handles, and this
    // one is about to be used (with every other handle busy it was the one
    // unused entry, and its reader got "file closed").
    entry.users++;
    this.evict();
    try {
      const fh = await entry.open;
      return await fn(fh);
    } catch (err) {
      if (this.entries.get(file) === entry) {
        entry.stale = true; // a failed open is not cached
        this.entries.delete(file);
      }
      throw err;
    } finally {
      entry.users--;
      if (entry.stale && entry.users === 0) this.closeEntry(entry);
    }
  }

  /** The file was replaced or deleted: close its handle once unused. */
  invalidate(file: number): void {
    const e = this.entries.get(file);
    if (!e) return;
    this.entries.delete(file);
    e.stale = true;
    if (e.users === 0) this.closeEntry(e);
  }

  get openCount(): number {
    return this.entries.size;
  }

  async closeAll(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    for (const e of all) e.stale = true;
    await Promise.all(all.filter((e) => e.users === 0).map((e) => this.closeEntry(e)));
  }

  private evict(): void {
    if (this.entries.size <= this.max) return;
    for (const [file, e] of this.entries) {
      if (this.entries.size <= this.max) break;
      if (e.users > 0) continue;
      this.entries.delete(file);
      e.stale = true;
      void this.closeEntry(e);
    }
  }

  private closeEntry(e: Entry): Promise<void> {
    return e.open.then(
      (fh) => fh.close().catch(() => undefined),
      () => undefined,
    );
  }
}

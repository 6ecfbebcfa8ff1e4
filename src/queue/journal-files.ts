/**
 * The journal files of every queue index in the process share a bounded
 * number of descriptors: a journal is opened when it is written, and the
 * least recently used idle one is closed when another must open past the
 * limit. A journal with unsynced writes is fsynced before it is closed, so a
 * write-back error is reported to its own queue and never lost with the
 * descriptor (after close, a new descriptor would not see it). When every
 * open journal is busy, one more opens anyway: the limit is soft, and
 * `stats()` says how far it went.
 */
import { promises as fsp } from 'fs';

export const DEFAULT_MAX_OPEN_JOURNALS = 1024;

export interface JournalFileStats {
  open: number;
  limit: number;
  /** Highest number open at once. */
  peak: number;
  opened: number;
  closedIdle: number;
}

export class JournalFiles {
  /** Open files, least recently used first. */
  private readonly lru = new Set<JournalFile>();
  private readonly counters = { peak: 0, opened: 0, closedIdle: 0 };

  constructor(public limit = DEFAULT_MAX_OPEN_JOURNALS) {}

  file(path: string): JournalFile {
    return new JournalFile(this, path);
  }

  /** @internal A file is about to be used: make room for its descriptor if it has none. */
  async admit(f: JournalFile): Promise<void> {
    if (this.lru.has(f)) {
      this.lru.delete(f);
      this.lru.add(f);
      return;
    }
    for (const other of this.lru) {
      if (this.lru.size < this.limit) break;
      if (other.busy) continue;
      this.lru.delete(other);
      this.counters.closedIdle++;
      await other.release();
    }
    this.lru.add(f);
    this.counters.opened++;
    this.counters.peak = Math.max(this.counters.peak, this.lru.size);
  }

  /** @internal */
  forget(f: JournalFile): void {
    this.lru.delete(f);
  }

  stats(): JournalFileStats {
    return { open: this.lru.size, limit: this.limit, ...this.counters };
  }
}

/** One queue's journal: appends, fsync and truncation through a descriptor opened on demand. */
export class JournalFile {
  private fh: fsp.FileHandle | null = null;
  busy = 0;
  /** Written since the last fsync that worked. */
  dirty = false;
  /** An fsync at close that failed: reported by the next use. */
  private failure: Error | null = null;

  constructor(
    private readonly pool: JournalFiles,
    readonly path: string,
  ) {}

  private async use<T>(fn: (fh: fsp.FileHandle) => Promise<T>): Promise<T> {
    if (this.failure) throw this.failure;
    this.busy++;
    try {
      await this.pool.admit(this);
      if (!this.fh) this.fh = await fsp.open(this.path, 'a');
      return await fn(this.fh);
    } finally {
      this.busy--;
    }
  }

  /** Appends; resolves with the bytes the kernel took (as FileHandle.write). */
  write(buf: Buffer, off: number, len: number): Promise<{ bytesWritten: number }> {
    return this.use(async (fh) => {
      const r = await fh.write(buf, off, len);
      if (r.bytesWritten > 0) this.dirty = true;
      return r;
    });
  }

  /** fdatasync if anything was written since the last one that worked. */
  async datasync(): Promise<void> {
    if (this.failure) throw this.failure;
    if (!this.dirty) return;
    await this.use(async (fh) => {
      await fh.datasync();
      this.dirty = false;
    });
  }

  truncate(len: number): Promise<void> {
    return this.use(async (fh) => {
      await fh.truncate(len);
      this.dirty = true;
    });
  }

  /** Closed to make room for another journal: fsynced first if dirty. */
  async release(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (!fh) return;
    try {
      if (this.dirty) {
        await fh.datasync();
        this.dirty = false;
      }
    } catch (e) {
      this.failure = e as Error;
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    this.pool.forget(this);
    const fh = this.fh;
    this.fh = null;
    await fh?.close();
  }
}

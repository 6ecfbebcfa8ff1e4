/**
 * Segment files: `<n>.rdq`, numbered from 0, eldest lowest; `<n>.rdt` is the
 * temporary file of a compaction whose destination is `<n>.rdq`.
 *
 * SegmentWriter appends to the current file through an in-memory buffer so a
 * small message costs no syscall of its own; it tracks how far the file has
 * been handed to the OS (`writtenOffset`) and how far it is durable (`syncedOffset`).
 */
import { promises as fsp } from 'fs';
import * as path from 'path';

export const SEGMENT_EXT = '.rdq';
export const TMP_EXT = '.rdt';

export function segmentPath(dir: string, file: number): string {
  return path.join(dir, `${file}${SEGMENT_EXT}`);
}

export function tmpPath(dir: string, file: number): string {
  return path.join(dir, `${file}${TMP_EXT}`);
}

/** Numbers of the files `<n><ext>` in `dir`, ascending. */
export async function listNumbered(dir: string, ext: string): Promise<number[]> {
  const names = await fsp.readdir(dir);
  const out: number[] = [];
  for (const n of names) {
    if (!n.endsWith(ext)) continue;
    const stem = n.slice(0, -ext.length);
    if (/^\d+$/.test(stem)) out.push(Number(stem));
  }
  return out.sort((a, b) => a - b);
}

export class SegmentWriter {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Serializes flush/sync/close; a failure sticks (every later step rejects). */
  private chain: Promise<void> = Promise.resolve();
  private closed = false;
  /** Logical end of the file, buffered bytes included. */
  size: number;
  writtenOffset: number;
  syncedOffset: number;

  private constructor(
    readonly file: number,
    private readonly fh: fsp.FileHandle,
    size: number,
    private readonly bufferLimit: number,
    private readonly onError: (e: unknown) => void,
  ) {
    this.size = size;
    this.writtenOffset = size;
    this.syncedOffset = size;
  }

  /** Opens (or creates) `file` for appending at `size`, cutting anything beyond. */
  static async open(
    dir: string,
    file: number,
    size: number,
    opts: { bufferLimit: number; onError: (e: unknown) => void },
  ): Promise<SegmentWriter> {
    const p = segmentPath(dir, file);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(p, 'r+');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      fh = await fsp.open(p, 'w+');
    }
    try {
      const st = await fh.stat();
      if (st.size !== size) await fh.truncate(size);
      // Always: after a crash the bytes up to `size` may be in the page cache
      // only (a killed process's writes), and a sync of a message already
      // there is answered without writing anything.
      await fh.datasync();
    } catch (e) {
      await fh.close();
      throw e;
    }
    return new SegmentWriter(file, fh, size, opts.bufferLimit, opts.onError);
  }

  /** Appends a record (header ‖ body); returns its offset. Never blocks. */
  append(header: Buffer, body: Buffer): number {
    const offset = this.size;
    this.chunks.push(header, body);
    const n = header.length + body.length;
    this.buffered += n;
    this.size += n;
    if (this.buffered >= this.bufferLimit) this.flush().catch(this.onError);
    return offset;
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Hands every buffered byte to the OS. */
  flush(): Promise<void> {
    const step = this.chain.then(() => this.writeOut());
    this.chain = step;
    return step;
  }

  /** Flushes and fsyncs; resolves with the offset now durable. */
  sync(): Promise<number> {
    let target = 0;
    const step = this.chain.then(async () => {
      await this.writeOut();
      target = this.writtenOffset;
      if (this.syncedOffset < target) {
        await this.fh.datasync();
        this.syncedOffset = target;
      }
    });
    this.chain = step;
    return step.then(() => target);
  }

  /** Flushes, fsyncs and closes. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.sync();
    this.closed = true;
    await this.fh.close();
  }

  /** Closes without flushing or syncing (tests simulating a crash; failure paths). */
  async abandon(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.chunks = [];
    this.buffered = 0;
    await this.chain.catch(() => undefined);
    await this.fh.close().catch(() => undefined);
  }

  private async writeOut(): Promise<void> {
    if (this.buffered === 0) return;
    const data = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered);
    const at = this.writtenOffset;
    this.chunks = [];
    this.buffered = 0;
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, at + done);
      done += bytesWritten;
    }
    this.writtenOffset = at + data.length;
  }
}

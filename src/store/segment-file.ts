/**
 * Segment files: `<n>.rdq`, numbered from 0, eldest lowest; `<n>.rdt` is the
 * temporary file of a compaction whose destination is `<n>.rdq`.
 *
 * SegmentWriter appends to the current file through an in-memory buffer so a
 * small message costs no syscall of its own; it tracks how far the file has
 * been handed to the OS (`writtenOffset`) and how far it is durable (`syncedOffset`).
 * A flush issues its writes at once, at their offsets, without waiting for
 * the flushes before it (the disk here reaches its bandwidth only with
 * several writes in flight); `writtenOffset` moves only once every write
 * below it has completed.
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
  /** The first write that failed: no later write is issued. */
  private failed: unknown;
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
    private readonly onWritten?: (file: number, offset: number) => void,
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
    opts: {
      bufferLimit: number;
      onError: (e: unknown) => void;
      /** Called each time `writtenOffset` moves: every byte below `offset` has reached the OS. */
      onWritten?: (file: number, offset: number) => void;
    },
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
    return new SegmentWriter(file, fh, size, opts.bufferLimit, opts.onError, opts.onWritten);
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

  /** Hands every buffered byte to the OS. Resolves once they and every byte before them are written. */
  flush(): Promise<void> {
    if (this.buffered > 0) {
      const end = this.size;
      const issued = this.writeOut();
      this.chain = Promise.all([this.chain, issued]).then(() => {
        this.writtenOffset = end;
        this.onWritten?.(this.file, end);
      });
    }
    return this.chain;
  }

  /** Flushes and fsyncs; resolves with the offset now durable. */
  sync(): Promise<number> {
    let target = 0;
    const step = this.flush().then(async () => {
      target = this.writtenOffset;
      if (this.syncedOffset < target) {
        await this.fh.datasync();
        this.syncedOffset = Math.max(this.syncedOffset, target);
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

  /** Starts the writes of the buffered bytes at their offsets; a failed one fails the writer for good. */
  private writeOut(): Promise<void> {
    if (this.failed !== undefined) return Promise.reject(this.failed);
    const chunks = this.chunks;
    let pos = this.size - this.buffered;
    this.chunks = [];
    this.buffered = 0;
    // Pieces of about WRITE_PIECE bytes, written at once. Bodies are not
    // copied (writev). A crash can leave a later piece on disk and not an
    // earlier one, as the kernel's writeback of one large write can; nothing
    // from the gap on was fsynced, so none of it was confirmed. Recovery
    // covers such a gap with a filler or cuts it (torn-writes.ts).
    const writes: Promise<void>[] = [];
    let start = 0;
    let size = 0;
    for (let i = 0; i < chunks.length; i++) {
      size += chunks[i].length;
      if (size >= WRITE_PIECE || i - start + 1 >= MAX_IOVECS || i === chunks.length - 1) {
        writes.push(writeFully(this.fh, chunks.slice(start, i + 1), pos, size));
        pos += size;
        start = i + 1;
        size = 0;
      }
    }
    return Promise.all(writes).then(
      () => undefined,
      (e: unknown) => {
        this.failed ??= e;
        throw e;
      },
    );
  }
}

/** Bytes per positional write of a flush; a flush of 1 MiB goes out as 4 writes in flight. */
const WRITE_PIECE = 256 * 1024;
/** Buffers per writev, under Linux's IOV_MAX (1,024). */
const MAX_IOVECS = 512;

/** Writes `bufs` (`size` bytes) at `pos`, going on after a short write. */
async function writeFully(fh: fsp.FileHandle, bufs: Buffer[], pos: number, size: number): Promise<void> {
  if (bufs.length === 1) {
    const b = bufs[0];
    let done = 0;
    while (done < size) done += (await fh.write(b, done, size - done, pos + done)).bytesWritten;
    return;
  }
  const { bytesWritten } = await fh.writev(bufs, pos);
  if (bytesWritten < size) {
    const rest = Buffer.concat(bufs, size).subarray(bytesWritten);
    await writeFully(fh, [rest], pos + bytesWritten, rest.length);
  }
}

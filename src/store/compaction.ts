/**
 * Combining two neighbouring files, as the reference does it: the left file
 * (destination) keeps its contiguous valid prefix in place; its scattered valid
 * records go through a temporary file and come back right above the prefix;
 * the right file's (source's) valid records are appended; then the source is
 * deleted. Data is duplicated, never moved: every step that drops bytes comes
 * after an fsync of the copy (see recoverCrashedCompactions for the way back).
 *
 * A file with a damaged record is never compacted (DamagedSegmentError).
 *
 * The caller has locked both files and waited for their readers to leave.
 * All I/O is chunked and async, so the event loop keeps running.
 */
import { promises as fsp } from 'fs';
import { Index, MsgId } from '../index/types';
import { FileSummary } from './file-summary';
import { fsyncDir } from './fs-util';
import { segmentPath, tmpPath } from './segment-file';
import { scanSegment } from './segment-scanner';

export interface CompactionContext {
  dir: string;
  index: Index;
  chunkSize: number;
  /** Checked between steps; throwing aborts the compaction (a simulated crash, or the store failed by another path). */
  checkAbort: () => void;
  onChecksumFailures: (n: number) => void;
}

interface Located {
  id: MsgId;
  offset: number;
  totalSize: number;
}

/**
 * A file of the pair holds records that fail their checksum, or bytes that are
 * no intact record (a damaged header hides a whole record). Compacting it
 * would drop their bytes while their index entries (and the file's valid
 * count) still account for them, so a later remove of one would make the
 * count run short and could delete the file with live records in it. The
 * pair is left as it is, before anything was written.
 */
export class DamagedSegmentError extends Error {
  constructor(
    readonly file: number,
    readonly checksumFailures: number,
    readonly skippedBytes: number,
  ) {
    super(`segment file ${file} holds ${checksumFailures} records that fail their checksum and ${skippedBytes} bytes that are no intact record`);
  }
}

/** Records of `file` that the index still points at, ascending by offset; throws DamagedSegmentError on damage. */
async function findUnremoved(ctx: CompactionContext, file: number): Promise<Located[]> {
  const scan = await scanSegment(segmentPath(ctx.dir, file), ctx.chunkSize);
  // Never the current file, so any byte outside an intact record is damage (a torn length hides its record entirely).
  if (scan.checksumFailures || scan.skippedBytes) {
    ctx.onChecksumFailures(scan.checksumFailures);
    throw new DamagedSegmentError(file, scan.checksumFailures, scan.skippedBytes);
  }
  const out: Located[] = [];
  const BATCH = 512;
  for (let b = 0; b < scan.records.length; b += BATCH) {
    const batch = scan.records.slice(b, b + BATCH);
    const locs = await Promise.all(batch.map((r) => ctx.index.lookup(r.id)));
    batch.forEach((r, j) => {
      const l = locs[j];
      if (l && l.file === file && l.offset === r.offset && l.totalSize === r.totalSize) out.push(r);
    });
    ctx.checkAbort();
  }
  return out;
}

async function copyRange(ctx: CompactionContext, from: fsp.FileHandle, fromPos: number, to: fsp.FileHandle, toPos: number, len: number): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(ctx.chunkSize, Math.max(len, 1)));
  let done = 0;
  while (done < len) {
    const n = Math.min(buf.length, len - done);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await from.read(buf, got, n - got, fromPos + done + got);
      if (bytesRead === 0) throw new Error(`compaction: unexpected end of file at ${fromPos + done + got}`);
      got += bytesRead;
    }
    let put = 0;
    while (put < n) {
      const { bytesWritten } = await to.write(buf, put, n - put, toPos + done + put);
      put += bytesWritten;
    }
    done += n;
    ctx.checkAbort();
  }
}

/**
 * Copies `work` (records of `from`) to `to` starting at `toPos`, block by
 * contiguous block, and points the index at `destFile`/`indexPos + …`.
 * Returns the number of bytes copied.
 */
async function copyMessages(
  ctx: CompactionContext,
  work: Located[],
  from: fsp.FileHandle,
  to: fsp.FileHandle,
  toPos: number,
  destFile: number,
  indexPos: number,
): Promise<number> {
  let copied = 0;
  let blockStart = -1;
  let blockEnd = -1;
  let blockDest = 0;
  const updates: Array<Promise<void>> = [];
  for (const m of work) {
    const u = ctx.index.updateFields(m.id, { file: destFile, offset: indexPos + copied });
    u.catch(() => undefined); // awaited below; if a copy fails first, its failure is the one reported
    updates.push(u);
    if (blockEnd === m.offset) {
      blockEnd += m.totalSize;
    } else {
      if (blockStart >= 0) await copyRange(ctx, from, blockStart, to, toPos + blockDest, blockEnd - blockStart);
      blockStart = m.offset;
      blockEnd = m.offset + m.totalSize;
      blockDest = copied;
    }
    copied += m.totalSize;
  }
  if (blockStart >= 0) await copyRange(ctx, from, blockStart, to, toPos + blockDest, blockEnd - blockStart);
  await Promise.all(updates);
  return copied;
}

/** Combines `src` into `dst` (its left neighbour). Returns the destination's new size (all valid). */
export async function combineFiles(ctx: CompactionContext, src: FileSummary, dst: FileSummary): Promise<number> {
  // Both files are read before anything is written, so a damaged one stops the compaction while nothing has changed.
  const srcWork = await findUnremoved(ctx, src.file);
  const top = dst.contiguousTop;
  const dstWork = top === dst.validTotalSize ? undefined : (await findUnremoved(ctx, dst.file)).filter((m) => m.offset >= top);
  const dstFh = await fsp.open(segmentPath(ctx.dir, dst.file), 'r+');
  let srcFh: fsp.FileHandle | undefined;
  let dstEnd: number;
  try {
    if (!dstWork) {
      await dstFh.truncate(top);
      dstEnd = top;
    } else {
      const work = dstWork;
      const tmp = tmpPath(ctx.dir, dst.file);
      const tmpFh = await fsp.open(tmp, 'w+');
      let tmpSize: number;
      try {
        tmpSize = await copyMessages(ctx, work, dstFh, tmpFh, 0, dst.file, top);
        await tmpFh.datasync();
        await fsyncDir(ctx.dir); // the tmp file must survive before the destination is cut
        ctx.checkAbort();
        await dstFh.truncate(top);
        ctx.checkAbort();
        await copyRange(ctx, tmpFh, 0, dstFh, top, tmpSize);
        await dstFh.datasync();
      } finally {
        await tmpFh.close();
      }
      ctx.checkAbort();
      await fsp.rm(tmp, { force: true });
      dstEnd = top + tmpSize;
    }
    ctx.checkAbort();
    srcFh = await fsp.open(segmentPath(ctx.dir, src.file), 'r');
    dstEnd += await copyMessages(ctx, srcWork, srcFh, dstFh, dstEnd, dst.file, dstEnd);
    await dstFh.truncate(dstEnd);
    await dstFh.datasync();
  } finally {
    await dstFh.close();
    await srcFh?.close();
  }
  ctx.checkAbort();
  await fsp.rm(segmentPath(ctx.dir, src.file), { force: true });
  await fsyncDir(ctx.dir);
  return dstEnd;
}

/**
 * Hint files: `<n>.rdh` lists the records of segment file `<n>` once that
 * file no longer changes (it rolled, a compaction rewrote it, or a non-clean
 * start scanned it), so that the next non-clean start reads 28 bytes a record
 * instead of the whole file. The idea is Bitcask's hint files. Format in
 * docs/FORMATS.md ("Hint files"):
 *
 *     Magic:32  Version:32  File:32  DataSize:64  Count:32
 *     Count × { Offset:64  TotalSize:32  Id:128 }
 *     CRC32C(everything before):32
 *
 * All integers big-endian. A hint is trusted only whole: its checksum, its
 * file number and the data file's size must match, and its records must lie
 * inside the file in ascending order. It says where the records are, not that
 * their bytes are intact: each record's own CRC is checked when it is read, as
 * after a clean start.
 *
 * The rules that keep a hint true (message-store.ts keeps them):
 * - it is written (atomically) only after its data file is fsynced, and only
 *   from the records this store appended to a file it started (every append
 *   succeeded, or the store failed) or from a scan of the file that found no
 *   damage;
 * - before a compaction writes to a file, that file's hint is deleted and the
 *   deletion made durable; the only other change a file sees is its deletion;
 * - a file being appended to (the current file) has none, and a non-clean
 *   start never trusts one for it.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { crc32c } from '../util/crc32c';
import { fsyncDir, writeFileAtomic } from './fs-util';
import { ID_SIZE, HEADER_SIZE } from './record-codec';
import { ScannedRecord } from './segment-scanner';

export const HINT_EXT = '.rdh';
const HINT_MAGIC = 0x57524448; // "WRDH"
const HINT_VERSION = 1;
const HEAD = 24;
const ENTRY = 12 + ID_SIZE;

export function hintPath(dir: string, file: number): string {
  return path.join(dir, `${file}${HINT_EXT}`);
}

/**
 * A hint built record by record as they are appended to a file (or listed by
 * a scan): the entries go straight into their encoded form, 28 bytes each,
 * in a buffer that doubles as it fills.
 */
export class HintBuilder {
  private buf = Buffer.allocUnsafe(HEAD + 256 * ENTRY + 4);
  private at = HEAD;
  count = 0;

  add(id: Buffer, offset: number, totalSize: number): void {
    if (this.at + ENTRY + 4 > this.buf.length) {
      const bigger = Buffer.allocUnsafe(this.buf.length * 2);
      this.buf.copy(bigger, 0, 0, this.at);
      this.buf = bigger;
    }
    this.buf.writeUIntBE(0, this.at, 2); // offsets are below 2^48
    this.buf.writeUIntBE(offset, this.at + 2, 6);
    this.buf.writeUInt32BE(totalSize, this.at + 8);
    id.copy(this.buf, this.at + 12, 0, ID_SIZE);
    this.at += ENTRY;
    this.count++;
  }

  /** The hint of `file` holding `dataSize` bytes; the builder is spent. */
  finish(file: number, dataSize: number): Buffer {
    const buf = this.buf;
    buf.writeUInt32BE(HINT_MAGIC, 0);
    buf.writeUInt32BE(HINT_VERSION, 4);
    buf.writeUInt32BE(file, 8);
    buf.writeBigUInt64BE(BigInt(dataSize), 12);
    buf.writeUInt32BE(this.count, 20);
    buf.writeUInt32BE(crc32c(buf.subarray(0, this.at)), this.at);
    return buf.subarray(0, this.at + 4);
  }
}

export function encodeHint(file: number, dataSize: number, records: readonly ScannedRecord[]): Buffer {
  const b = new HintBuilder();
  for (const r of records) b.add(r.id, r.offset, r.totalSize);
  return b.finish(file, dataSize);
}

/** The records a hint lists, or why it cannot be trusted for a data file of `dataSize` bytes. */
export function decodeHint(buf: Buffer, file: number, dataSize: number): ScannedRecord[] | string {
  if (buf.length < HEAD + 4) return `${buf.length} bytes, too short`;
  if (buf.readUInt32BE(0) !== HINT_MAGIC) return 'bad magic';
  if (buf.readUInt32BE(4) !== HINT_VERSION) return `version ${buf.readUInt32BE(4)}, not ${HINT_VERSION}`;
  const count = buf.readUInt32BE(20);
  if (buf.length !== HEAD + count * ENTRY + 4) return `${buf.length} bytes for ${count} records`;
  const end = buf.length - 4;
  if (crc32c(buf.subarray(0, end)) !== buf.readUInt32BE(end)) return 'checksum mismatch';
  if (buf.readUInt32BE(8) !== file) return `it describes file ${buf.readUInt32BE(8)}`;
  const size = Number(buf.readBigUInt64BE(12));
  if (size !== dataSize) return `it describes ${size} bytes, the file has ${dataSize}`;
  const records: ScannedRecord[] = [];
  let floor = 0;
  for (let at = HEAD; at < end; at += ENTRY) {
    const offset = Number(buf.readBigUInt64BE(at));
    const totalSize = buf.readUInt32BE(at + 8);
    if (offset < floor || totalSize < HEADER_SIZE || offset + totalSize > dataSize) return `record at ${offset} (${totalSize} bytes) out of place`;
    floor = offset + totalSize;
    records.push({ id: Buffer.from(buf.subarray(at + 12, at + 12 + ID_SIZE)), offset, totalSize });
  }
  return records;
}

/** Writes the hint of `file` (its data already fsynced): write, fsync, rename, fsync the directory. */
export async function writeHint(dir: string, data: Buffer, file: number): Promise<void> {
  await writeFileAtomic(hintPath(dir, file), data);
}

/**
 * The hint of `file` if it can be trusted for a data file of `dataSize` bytes;
 * undefined if there is none, or (with `reason`) if it cannot be trusted.
 */
export async function readHint(dir: string, file: number, dataSize: number): Promise<{ records?: ScannedRecord[]; reason?: string }> {
  let buf: Buffer;
  try {
    buf = await fsp.readFile(hintPath(dir, file));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw e;
  }
  const r = decodeHint(buf, file, dataSize);
  return typeof r === 'string' ? { reason: r } : { records: r };
}

/** Deletes the hint of `file`; `durable` makes the deletion survive a crash before anything else is done. */
export async function removeHint(dir: string, file: number, durable: boolean): Promise<void> {
  await fsp.rm(hintPath(dir, file), { force: true });
  if (durable) await fsyncDir(dir);
}

/** Hints (and hint temporaries) of files not in `files`: left by a file deleted before its hint. */
export async function removeOrphanHints(dir: string, files: readonly number[]): Promise<number> {
  const have = new Set(files);
  let n = 0;
  for (const name of await fsp.readdir(dir)) {
    const m = /^(\d+)\.rdh(\.tmp)?$/.exec(name);
    if (!m || (m[2] === undefined && have.has(Number(m[1])))) continue;
    await fsp.rm(path.join(dir, name), { force: true });
    n++;
  }
  return n;
}

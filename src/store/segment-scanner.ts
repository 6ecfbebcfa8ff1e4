/**
 * Reads a segment file front to back and lists its intact records. A record
 * with a bad checksum, a torn tail or stray bytes is skipped: the scan looks for
 * the next magic and carries on, so one damaged record never hides the rest.
 * A filler (see record-codec) is passed over: it is neither record nor damage.
 * Reads in chunks so that the event loop is never held for long.
 */
import { promises as fsp } from 'fs';
import { decodeRecord, findMagic, HEADER_SIZE } from './record-codec';

export interface ScannedRecord {
  id: Buffer;
  offset: number;
  totalSize: number;
}

export interface ScanResult {
  /** Intact records in ascending offset order. */
  records: ScannedRecord[];
  fileSize: number;
  /** Complete records whose checksum did not match. */
  checksumFailures: number;
  /** Bytes that belong to no intact record (damage, torn tail, stray data). */
  skippedBytes: number;
  /** Where those bytes are: maximal runs, ascending, each with the checksum failures inside it. */
  damaged: DamagedRegion[];
  /** Bytes covered by fillers. */
  fillerBytes: number;
}

export interface DamagedRegion {
  offset: number;
  size: number;
  checksumFailures: number;
}

export function emptyScan(): ScanResult {
  return { records: [], fileSize: 0, checksumFailures: 0, skippedBytes: 0, damaged: [], fillerBytes: 0 };
}

const CHUNK = 1 << 20;

export async function scanSegment(path: string, chunkSize = CHUNK): Promise<ScanResult> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyScan();
    throw e;
  }
  try {
    const fileSize = (await fh.stat()).size;
    const records: ScannedRecord[] = [];
    let checksumFailures = 0;
    let skippedBytes = 0;
    let fillerBytes = 0;
    const damaged: DamagedRegion[] = [];
    const skip = (offset: number, size: number, failures: number): void => {
      skippedBytes += size;
      checksumFailures += failures;
      const last = damaged[damaged.length - 1];
      if (last && last.offset + last.size === offset) {
        last.size += size;
        last.checksumFailures += failures;
      } else damaged.push({ offset, size, checksumFailures: failures });
    };
    let buf = Buffer.alloc(0);
    let bufStart = 0;

    /** Makes the window hold [pos, pos + need) if the file has it; returns the local index of pos. */
    const ensure = async (pos: number, need: number): Promise<number> => {
      if (pos >= bufStart && pos + need <= bufStart + buf.length) return pos - bufStart;
      const len = Math.min(Math.max(chunkSize, need), fileSize - pos);
      const nb = Buffer.allocUnsafe(len);
      let got = 0;
      while (got < len) {
        const { bytesRead } = await fh.read(nb, got, len - got, pos + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      buf = nb.subarray(0, got);
      bufStart = pos;
      return 0;
    };

    /** First magic at or after `from`, or fileSize. */
    const resync = async (from: number): Promise<number> => {
      let at = from;
      while (at < fileSize) {
        const local = await ensure(at, Math.min(HEADER_SIZE, fileSize - at));
        const i = findMagic(buf, local);
        if (i >= 0) return bufStart + i;
        if (bufStart + buf.length >= fileSize) return fileSize;
        at = Math.max(at + 1, bufStart + buf.length - 3); // a magic may straddle the window edge
      }
      return fileSize;
    };

    let pos = 0;
    while (pos < fileSize) {
      if (fileSize - pos < HEADER_SIZE) {
        skip(pos, fileSize - pos, 0);
        break;
      }
      let local = await ensure(pos, HEADER_SIZE);
      let r = decodeRecord(buf, local);
      if (r.kind === 'short') {
        if (pos + r.need <= fileSize) {
          local = await ensure(pos, r.need);
          r = decodeRecord(buf, local);
        }
      }
      if (r.kind === 'ok') {
        records.push({ id: Buffer.from(r.id), offset: pos, totalSize: r.totalSize });
        pos += r.totalSize;
        continue;
      }
      if (r.kind === 'filler' && pos + r.totalSize <= fileSize) {
        fillerBytes += r.totalSize;
        pos += r.totalSize;
        continue;
      }
      const next = await resync(pos + 1);
      skip(pos, next - pos, r.kind === 'bad-checksum' ? 1 : 0);
      pos = next;
    }
    return { records, fileSize, checksumFailures, skippedBytes, damaged, fillerBytes };
  } finally {
    await fh.close();
  }
}

/**
 * The current file after a crash: a flush's writes go out at once, each at its
 * offset (segment-file.ts), so a crash can leave a later write on disk and not
 * an earlier one, or cut one short. Nothing past the first such gap was ever
 * fsynced (an fsync is issued only once every write below it completed), so
 * nothing confirmed lies in or after it; but records after it that a queue
 * references are kept, as any intact record is.
 *
 * A gap before the current file's last claimed record is covered by a filler
 * (record-codec.ts) so that later scans, hints and compaction see a sound file
 * instead of damage that would keep it from ever being compacted; what lies
 * after that record is cut by SegmentWriter.open. Covering is safe whatever
 * made the gap: after a rebuild no index entry points into it. The gaps are
 * counted as torn bytes, not as checksum failures, which stay the alarm for a
 * medium that damages data: a kill -9 mid-flush would otherwise raise it.
 * Damage of the medium in the current file cannot be told from a torn write;
 * it is logged the same way, with where it is.
 */
import { promises as fsp } from 'fs';
import type { Logger } from '../util/logger';
import { encodeFillerHeader, HEADER_SIZE } from './record-codec';
import { segmentPath, SEGMENT_EXT } from './segment-file';
import type { DamagedRegion } from './segment-scanner';

export interface Mended {
  /** Bytes of the gaps covered by a filler or cut. */
  tornBytes: number;
  /** The records failing their checksum inside them. */
  tornRecords: number;
}

/** Covers the gaps of `file` that end at or before `end` with fillers (fsynced); accounts for those and the ones after `end`. */
export async function mendTornWrites(dir: string, file: number, damaged: DamagedRegion[], end: number, log: Logger): Promise<Mended> {
  const fill = damaged.filter((d) => d.offset + d.size <= end && d.size >= HEADER_SIZE);
  const torn = damaged.filter((d) => d.offset >= end || fill.includes(d));
  const out = { tornBytes: torn.reduce((n, d) => n + d.size, 0), tornRecords: torn.reduce((n, d) => n + d.checksumFailures, 0) };
  if (torn.length === 0) return out;
  const where = torn.map((d) => `${d.size} bytes at ${d.offset}`).join(', ');
  log('warn', `recovery: ${file}${SEGMENT_EXT}, the current file, held no intact record in ${where} (writes in flight at the crash, or damage): ${fill.length} covered by fillers, the rest cut with the tail after ${end}`);
  if (fill.length) {
    const fh = await fsp.open(segmentPath(dir, file), 'r+');
    try {
      for (const d of fill) {
        const h = encodeFillerHeader(d.size);
        let done = 0;
        while (done < h.length) done += (await fh.write(h, done, h.length - done, d.offset + done)).bytesWritten;
      }
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }
  return out;
}

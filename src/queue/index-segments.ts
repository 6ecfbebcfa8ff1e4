/**
 * Segment files of a queue index. Segment n (file `<n>.seg`) holds the live
 * publish records of seqs [n × S, (n + 1) × S) as of the last fold, framed and
 * checksummed as journal records. A fold replaces a segment whole (temporary
 * file, fsync, rename), so a segment file is always a consistent snapshot;
 * one with no live entry is deleted. S is fixed per queue by `layout.json`,
 * written when the index is created.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { writeFileAtomic } from '../store/fs-util';
import { DamagedRange, JournalEntry, RecordType, decodeRecords, encodePublishes } from './journal-codec';
import { nextTurn, turnBudget } from '../util/turn-budget';

const SUFFIX = '.seg';
const LAYOUT = 'layout.json';

export interface SegmentSummary {
  count: number;
  bytes: number;
  /** Entries with an expiry (per-message TTL): the broker skips TTL checks while a queue has none. */
  expiring: number;
}

export function summarize(entries: Iterable<JournalEntry>): SegmentSummary {
  const s: SegmentSummary = { count: 0, bytes: 0, expiring: 0 };
  for (const e of entries) {
    s.count++;
    s.bytes += e.size;
    if (e.expiry >= 0) s.expiring++;
  }
  return s;
}

function segmentFile(dir: string, n: number): string {
  return path.join(dir, `${n}${SUFFIX}`);
}

/** Segment numbers present in `dir`, ascending. Leftover temporary files are removed when `clean` is set. */
export async function listSegments(dir: string, clean = false): Promise<number[]> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const out: number[] = [];
  for (const name of names) {
    const m = /^(\d+)\.seg$/.exec(name);
    if (m) out.push(Number(m[1]));
    else if (clean && name.endsWith(`${SUFFIX}.tmp`)) await fsp.rm(path.join(dir, name), { force: true });
  }
  return out.sort((a, b) => a - b);
}

/** Records decoded between two checks of the turn's budget. */
const DECODE_SLICE = 512;

/**
 * Live entries of segment n keyed by seq; empty if the file is absent. A bad
 * record (the file was damaged after its fsync) is reported with its offset
 * and skipped; the records after it are read.
 */
/** Told of each damaged range of a segment: in words, and as the file and range. */
export type DamageReport = (msg: string, file: string, damage: DamagedRange) => void;

export async function readSegment(dir: string, n: number, report?: DamageReport): Promise<Map<number, JournalEntry>> {
  const live = new Map<number, JournalEntry>();
  let buf: Buffer;
  try {
    buf = await fsp.readFile(segmentFile(dir, n));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return live;
    throw e;
  }
  // In slices, going on in the next turn whenever the turn's budget is spent
  // (turn-budget.ts): a segment of 16,384 records took ~30 ms to checksum
  // and decode in one go.
  for (let pos = 0; pos < buf.length; ) {
    const res = decodeRecords(buf, pos, DECODE_SLICE);
    for (const rec of res.records) if (rec.type === RecordType.PUBLISH) live.set(rec.entry.seq, rec.entry);
    for (const d of [...res.skipped, ...(res.tail ? [res.tail] : [])]) {
      report?.(`queue index segment ${segmentFile(dir, n)}: ${d.reason} record at offset ${d.offset}; ${d.bytes} bytes skipped`, segmentFile(dir, n), d);
    }
    pos = res.end;
    if (pos < buf.length && turnBudget.spent()) await nextTurn();
  }
  return live;
}

/** Replaces segment n by `entries` (seq order), or deletes it when there are none. The caller fsyncs the directory. */
export async function writeSegment(dir: string, n: number, entries: readonly JournalEntry[]): Promise<SegmentSummary> {
  const file = segmentFile(dir, n);
  if (entries.length === 0) {
    await fsp.rm(file, { force: true });
    return summarize([]);
  }
  const bytes = await encodePublishes(entries);
  const tmp = `${file}.tmp`;
  const fh = await fsp.open(tmp, 'w');
  try {
    await fh.writeFile(bytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
  return summarize(entries);
}

/** The queue's segment size, if its layout was recorded. */
/** layout.json exists but cannot be read as a layout. */
export class LayoutError extends Error {
  readonly code = 'ELAYOUT';
}

/**
 * The queue's segment size from `layout.json`: undefined only if the file is
 * absent; a file that cannot be read or parsed is a LayoutError (never taken
 * for a default, which could map seqs to the wrong segments).
 */
export async function readLayout(dir: string): Promise<number | undefined> {
  const file = path.join(dir, LAYOUT);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LayoutError(`${file} cannot be read: ${(e as Error).message}`);
  }
  let v: { segmentEntries?: unknown; version?: unknown };
  try {
    v = JSON.parse(text) as { segmentEntries?: unknown };
  } catch (e) {
    throw new LayoutError(`${file} is not JSON: ${(e as Error).message}`);
  }
  if (typeof v?.segmentEntries !== 'number' || !Number.isInteger(v.segmentEntries) || v.segmentEntries <= 0) {
    throw new LayoutError(`${file} has no valid segmentEntries: ${text.slice(0, 80)}`);
  }
  return v.segmentEntries;
}

/**
 * The segment sizes among `candidates` that every segment file agrees with
 * (each seq of segment n lies in [n × S, (n + 1) × S)): how a damaged
 * layout.json is recovered from.
 */
export async function layoutsMatchingSegments(dir: string, candidates: readonly number[]): Promise<number[]> {
  let fits = [...new Set(candidates)];
  for (const n of await listSegments(dir)) {
    const seqs = [...(await readSegment(dir, n)).keys()];
    fits = fits.filter((S) => seqs.every((q) => Math.floor(q / S) === n));
  }
  return fits;
}

/** Writes layout.json atomically (temporary file, fsync, rename, directory fsync). */
export async function writeLayout(dir: string, segmentEntries: number): Promise<void> {
  await writeFileAtomic(path.join(dir, LAYOUT), JSON.stringify({ segmentEntries }));
}

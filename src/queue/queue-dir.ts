/**
 * A queue index's directory as it lies on disk: its segment size
 * (layout.json, or inferred from the segment files when that is damaged),
 * its journal replayed into memory, and its live entries a segment at a time
 * (each segment file merged with its journal part). `scanQueueIndex` reads a
 * directory without opening it for writing (the store's ref-count walk,
 * deleting a crashed queue); `prepareQueueDir` is the first step of
 * QueueIndex.open, which also repairs what it finds.
 */
import { Logger } from '../util/logger';
import { promises as fsp } from 'fs';
import * as path from 'path';
import { fsyncDir } from '../store/fs-util';
import { DamagedRange, JournalEntry, RecordType, decodeRecords } from './journal-codec';
import { JournalState, overlay } from './journal-state';
import { DamageReport, LayoutError, SegmentSummary, layoutsMatchingSegments, listSegments, readLayout, readSegment, summarize, writeLayout } from './index-segments';


/** The journal's name in a queue's directory. */
export const JOURNAL = 'journal';
export const DEFAULT_SEGMENT_ENTRIES = 16384;

export interface LoadedJournal {
  state: JournalState;
  validBytes: number;
  fileBytes: number;
  /** Damaged ranges between good records (skipped), and a damaged tail (cut). */
  skipped: DamagedRange[];
  tail?: DamagedRange;
  maxSeq: number;
}

export async function loadJournal(dir: string, segmentEntries: number): Promise<LoadedJournal> {
  const state = new JournalState(segmentEntries);
  let buf: Buffer;
  try {
    buf = await fsp.readFile(path.join(dir, JOURNAL));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { state, validBytes: 0, fileBytes: 0, skipped: [], maxSeq: -1 };
    throw e;
  }
  const res = decodeRecords(buf);
  let maxSeq = -1;
  for (const rec of res.records) {
    state.apply(rec);
    if (rec.type === RecordType.PUBLISH) maxSeq = Math.max(maxSeq, rec.entry.seq);
    else for (const s of rec.seqs) maxSeq = Math.max(maxSeq, s);
  }
  return { state, validBytes: res.validBytes, fileBytes: buf.length, skipped: res.skipped, tail: res.tail, maxSeq };
}

/**
 * The live entries of every segment in ascending order, one segment at a time
 * (segment file merged with its journal part). `fileSummary` is what the
 * segment file alone holds.
 */
export async function* liveBySegment(
  dir: string,
  files: readonly number[],
  journal: JournalState,
  report?: DamageReport,
): AsyncGenerator<{ entries: JournalEntry[]; n: number; fileSummary: SegmentSummary }> {
  const all = [...new Set([...files, ...journal.segments()])].sort((a, b) => a - b);
  const onDisk = new Set(files);
  for (const n of all) {
    const live = onDisk.has(n) ? await readSegment(dir, n, report) : new Map<number, JournalEntry>();
    const fileSummary = summarize(live.values());
    overlay(live, journal.segment(n));
    yield { entries: [...live.values()].sort((a, b) => a.seq - b.seq), n, fileSummary };
  }
}

/**
 * The queue's segment size from layout.json (undefined if there is none).
 * A damaged one is replaced by whichever of the configured and the default
 * size every segment file agrees with (`inferred`: the caller writes it back
 * when it says it will, `rewrite`); if none does, LayoutError.
 */
export async function readOrInferLayout(dir: string, configured: number | undefined, log?: Logger, rewrite = false): Promise<{ segmentEntries: number | undefined; inferred?: number }> {
  try {
    return { segmentEntries: await readLayout(dir) };
  } catch (e) {
    if (!(e instanceof LayoutError)) throw e;
    const fits = await layoutsMatchingSegments(dir, [configured ?? DEFAULT_SEGMENT_ENTRIES, DEFAULT_SEGMENT_ENTRIES]);
    if (fits.length === 0) throw new LayoutError(`${e.message}; no known segment size fits the segment files in ${dir}: not opened`);
    log?.('error', `${e.message}; the segment files agree with ${fits[0]} entries a segment${rewrite ? ', rewritten' : ''}`);
    return { segmentEntries: fits[0], inferred: fits[0] };
  }
}

/**
 * A queue directory's live entries (segments merged with the journal), a
 * segment's worth at a time, without opening it for writing. For the
 * ref-count walk of a non-clean start and for deleting a crashed queue.
 */
export async function* scanQueueIndex(dir: string, configured?: number, log?: Logger): AsyncGenerator<{ entries: JournalEntry[]; n: number }> {
  const segmentEntries = (await readOrInferLayout(dir, configured, log)).segmentEntries ?? DEFAULT_SEGMENT_ENTRIES;
  const journal = await loadJournal(dir, segmentEntries);
  for await (const { entries, n } of liveBySegment(dir, await listSegments(dir), journal.state)) yield { entries, n };
}

/**
 * Makes a queue's directory ready to be opened for writing, before any
 * segment is read: creates it, removes leftover segment temporaries, settles
 * the segment size (writing layout.json when it is absent or was inferred),
 * replays the journal, cuts a damaged tail off it and creates it if absent.
 * Returns the segment files on disk, ascending, and the journal as loaded.
 */
export async function prepareQueueDir(dir: string, configured: number | undefined, log: Logger): Promise<{ files: number[]; loaded: LoadedJournal }> {
  await fsp.mkdir(dir, { recursive: true });
  const files = await listSegments(dir, true);
  const found = await readOrInferLayout(dir, configured, log, true);
  let segmentEntries = found.segmentEntries;
  if (found.inferred) await writeLayout(dir, found.inferred);
  if (segmentEntries === undefined) {
    // No layout: a new index, or one written before segments existed (journal only).
    segmentEntries = files.length ? DEFAULT_SEGMENT_ENTRIES : (configured ?? DEFAULT_SEGMENT_ENTRIES);
    await writeLayout(dir, segmentEntries);
  }
  const loaded = await loadJournal(dir, segmentEntries);
  const file = path.join(dir, JOURNAL);
  for (const d of loaded.skipped) {
    log('error', `queue journal ${file}: ${d.reason} record at offset ${d.offset}, ${d.bytes} bytes skipped; the records after it are kept`);
  }
  if (loaded.tail) {
    // Cut before anything is appended, so no new record ever follows a damaged one.
    log('warn', `queue journal ${file}: cut ${loaded.tail.bytes} bytes at offset ${loaded.tail.offset} (${loaded.tail.reason} tail)`);
    await fsp.truncate(file, loaded.validBytes);
  }
  // Created now (its directory entry made durable); its descriptor is opened when it is written.
  if (loaded.fileBytes === 0) {
    await (await fsp.open(file, 'a')).close();
    await fsyncDir(dir);
  }
  return { files, loaded };
}

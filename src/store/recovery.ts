/**
 * Start-up: interrupted compactions, recovery terms, and the non-clean rebuild
 * (ref counts from the caller's deltas, then a pass over every segment file
 * that claims, for each referenced id, its first intact record: read from the
 * file's hint where it has a trusted one, scanned otherwise).
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { Index, keyOf, MsgId } from '../index/types';
import type { Logger } from '../util/logger';
import { FileSummary, newSummary } from './file-summary';
import { fsyncDir, sealJson, takeFile, unsealJson, writeFileAtomic } from './fs-util';
import { listNumbered, segmentPath, SEGMENT_EXT, TMP_EXT, tmpPath } from './segment-file';
import { emptyScan, scanSegment, ScannedRecord, ScanResult } from './segment-scanner';
import { encodeHint, HINT_EXT, readHint, removeHint } from './hint-file';
import { mendTornWrites } from './torn-writes';


export const RECOVERY_TERMS_NAME = 'clean.json';

/**
 * Placeholder file number of an index entry whose ref count is known (from the
 * deltas) but whose record has not been found yet. Fits an unsigned 32-bit field.
 */
export const UNPLACED_FILE = 0xffffffff;

const PROGRESS_MS = 1000;

export interface RecoveryTerms {
  clientRefs: string[];
  indexKind: string;
}

export async function storeRecoveryTerms(dir: string, terms: RecoveryTerms): Promise<void> {
  await writeFileAtomic(path.join(dir, RECOVERY_TERMS_NAME), sealJson({ version: 1, ...terms }));
}

/** Reads and deletes the recovery terms; undefined if absent or garbled. */
export async function readRecoveryTerms(dir: string): Promise<RecoveryTerms | undefined> {
  return parseRecoveryTerms(unsealJson(await takeFile(path.join(dir, RECOVERY_TERMS_NAME))));
}

/** The recovery terms a sealed state file held, or undefined. */
export function parseRecoveryTerms(v: unknown): RecoveryTerms | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const { version, clientRefs, indexKind } = v as { version?: unknown; clientRefs?: unknown; indexKind?: unknown };
  if (version !== 1 || typeof indexKind !== 'string' || !Array.isArray(clientRefs) || !clientRefs.every((r) => typeof r === 'string')) {
    return undefined;
  }
  return { clientRefs: clientRefs as string[], indexKind };
}

/**
 * A compaction that died leaves `<n>.rdt` next to its destination `<n>.rdq`.
 * Its records are copies of records that may no longer be anywhere else, so
 * they are appended to the destination (duplicates are harmless: the rebuild
 * takes the first copy). Returns whether any was found.
 */
export async function recoverCrashedCompactions(dir: string, log: Logger): Promise<boolean> {
  const tmps = await listNumbered(dir, TMP_EXT);
  for (const n of tmps) {
    const tmp = tmpPath(dir, n);
    const main = segmentPath(dir, n);
    const data = await fsp.readFile(tmp);
    log('warn', `recovering an interrupted compaction: appending ${data.length} bytes of ${n}${TMP_EXT} to ${n}${SEGMENT_EXT}`);
    const fh = await fsp.open(main, 'a');
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rm(tmp, { force: true });
  }
  if (tmps.length) await fsyncDir(dir);
  return tmps.length > 0;
}

/**
 * The ref counts of a non-clean start, gathered before any record is found.
 * They are kept in a map of their own (an id and a count each, about 60 bytes)
 * so that the scan claims a record with one synchronous lookup and the index
 * receives one insert per live message. Past `maxInMemory` ids the map is
 * moved into the index as unplaced entries and counting goes on there: memory
 * stays bounded at the cost of a read and a second write per message.
 */
export interface CountedRefs {
  /** Referenced ids not yet claimed (latin1 key -> count > 0); empty once spilled. */
  inMemory: Map<string, number>;
  /** Whether the counts are in the index, as entries in UNPLACED_FILE. */
  spilled: boolean;
  /** Deltas read. */
  deltas: number;
}

/** Counts the ref-count deltas (the index is empty); a count that falls to 0 or below is dropped. */
export async function countMsgRefs(
  index: Index,
  deltas: AsyncIterable<[MsgId, number]>,
  log: Logger,
  maxInMemory: number,
): Promise<CountedRefs> {
  const refs: CountedRefs = { inMemory: new Map(), spilled: false, deltas: 0 };
  let last = Date.now();
  for await (const [id, delta] of deltas) {
    refs.deltas++;
    if (delta === 0) continue;
    if (refs.spilled) await addToIndex(index, id, delta);
    else {
      const k = keyOf(id);
      const cur = refs.inMemory.get(k);
      if (cur === undefined && delta < 0) continue;
      const rc = (cur ?? 0) + delta;
      if (rc <= 0) refs.inMemory.delete(k);
      else refs.inMemory.set(k, rc);
      if (refs.inMemory.size > maxInMemory) {
        log('info', `recovery: more than ${maxInMemory} messages referenced: counting on in the ${index.kind} index`);
        for (const [key, n] of refs.inMemory) index.insert(Buffer.from(key, 'latin1'), unplaced(n));
        refs.inMemory.clear();
        refs.spilled = true;
      }
    }
    if (Date.now() - last >= PROGRESS_MS) {
      last = Date.now();
      log('info', `recovery: counted ${refs.deltas} message references`);
    }
  }
  return refs;
}

const unplaced = (refCount: number) => ({ refCount, file: UNPLACED_FILE, offset: 0, totalSize: 0 });

async function addToIndex(index: Index, id: MsgId, delta: number): Promise<void> {
  const loc = await index.lookup(id);
  if (!loc) {
    if (delta > 0) index.insert(id, unplaced(delta));
  } else {
    const rc = loc.refCount + delta;
    if (rc <= 0) index.delete(id);
    else index.update(id, { ...loc, refCount: rc });
  }
}

/** For each record, the count of its unplaced index entry (spilled counts), or undefined. */
async function unplacedCounts(index: Index, records: ScannedRecord[]): Promise<Array<number | undefined>> {
  const counts: Array<number | undefined> = [];
  for (let b = 0; b < records.length; b += LOOKUP_BATCH) {
    const locs = await Promise.all(records.slice(b, b + LOOKUP_BATCH).map((r) => index.lookup(r.id)));
    for (const loc of locs) counts.push(loc && loc.file === UNPLACED_FILE ? loc.refCount : undefined);
  }
  return counts;
}

export interface RebuildResult {
  /** Ascending, linked; the last is the current file. */
  summaries: FileSummary[];
  current: number;
  /** Where appending resumes: the end of the current file's last valid record. */
  currentSize: number;
  checksumFailures: number;
  skippedBytes: number;
  /** Bytes of the current file's gaps (torn-writes.ts): covered by fillers or cut; not in `skippedBytes`, their records not in `checksumFailures`. */
  tornBytes: number;
  deletedFiles: number;
  /** Referenced messages found in no segment file (counted only while the counts were in memory). */
  lostMessages: number;
  /** Their ids (latin1 keys); undefined when the counts spilled to the index (then not known). */
  unfound: Set<string> | undefined;
  /** Files whose records came from their hint (not read); the others were scanned. */
  hintedFiles: number;
  /** Hints to write for files this rebuild scanned and found sound (each fsynced before it returned). */
  hints: Array<{ file: number; data: Buffer }>;
}

type FileRecords = ScanResult & { hinted: boolean };

/**
 * The records of `file`: from its hint when it has one that can be trusted
 * (never for the current file, which is cut and appended to), else a scan.
 */
async function recordsOf(dir: string, file: number, current: boolean, log: Logger): Promise<FileRecords> {
  const p = segmentPath(dir, file);
  if (current) {
    await removeHint(dir, file, false);
  } else {
    const size = (await fsp.stat(p)).size;
    const h = await readHint(dir, file, size);
    if (h.records) return { ...emptyScan(), records: h.records, fileSize: size, hinted: true };
    if (h.reason) {
      log('warn', `recovery: ${file}${HINT_EXT} not trusted (${h.reason}); scanning ${file}${SEGMENT_EXT}`);
      await removeHint(dir, file, false); // a sound scan writes a new one
    }
  }
  return { ...(await scanSegment(p)), hinted: false };
}

const LOOKUP_BATCH = 512;

/**
 * Scans every segment (a few at a time), claims for each counted id the first
 * intact record (files in ascending order) and indexes it, builds the
 * summaries, drops the counts no record claimed and empty non-current files.
 */
export async function rebuildFromSegments(
  dir: string,
  index: Index,
  refs: CountedRefs,
  opts: { log: Logger; concurrency: number },
): Promise<RebuildResult> {
  const { log } = opts;
  const files = await listNumbered(dir, SEGMENT_EXT);
  if (files.length === 0) {
    const unfound = refs.spilled ? undefined : new Set(refs.inMemory.keys());
    await dropUnclaimed(index, refs, log);
    return { summaries: [newSummary(0, undefined)], current: 0, currentSize: 0, checksumFailures: 0, skippedBytes: 0, tornBytes: 0, deletedFiles: 0, lostMessages: unfound?.size ?? 0, unfound, hintedFiles: 0, hints: [] };
  }
  const started = Date.now();
  let lastReport = started;
  const scans: Array<Promise<FileRecords> | undefined> = [];
  let nextToStart = 0;
  const startMore = (upTo: number): void => {
    while (nextToStart < files.length && nextToStart < upTo) {
      const p = recordsOf(dir, files[nextToStart], nextToStart === files.length - 1, log);
      p.catch(() => undefined);
      scans[nextToStart++] = p;
    }
  };

  const all: FileSummary[] = [];
  let checksumFailures = 0;
  let skippedBytes = 0;
  let tornBytes = 0;
  let scannedBytes = 0;
  const hinted = new Set<number>();
  const hints = new Map<number, Buffer>();
  for (let i = 0; i < files.length; i++) {
    startMore(i + opts.concurrency);
    const file = files[i];
    const scan = await scans[i]!;
    scans[i] = undefined;
    if (scan.hinted) hinted.add(file);
    else scannedBytes += scan.fileSize;
    const isLast = i === files.length - 1;
    if (!scan.hinted && !isLast && scan.checksumFailures === 0 && scan.skippedBytes === 0) hints.set(file, encodeHint(file, scan.fileSize, scan.records));
    let valid = 0;
    let top = 0;
    let lastEnd = 0;
    // A claimed id leaves the map (or its entry leaves UNPLACED_FILE), so a later copy is garbage.
    const spilledCounts = refs.spilled ? await unplacedCounts(index, scan.records) : undefined;
    const claimed = new Set<string>();
    for (let j = 0; j < scan.records.length; j++) {
      const r = scan.records[j];
      const k = keyOf(r.id);
      const refCount = spilledCounts ? (claimed.has(k) ? undefined : spilledCounts[j]) : refs.inMemory.get(k);
      if (refCount === undefined) continue;
      const loc = { refCount, file, offset: r.offset, totalSize: r.totalSize };
      if (spilledCounts) {
        claimed.add(k);
        index.update(r.id, loc);
      } else {
        refs.inMemory.delete(k);
        index.insert(r.id, loc);
      }
      if (r.offset === top) top += r.totalSize; // contiguous valid prefix
      valid += r.totalSize;
      lastEnd = r.offset + r.totalSize;
    }
    // the current file's gaps are torn writes (torn-writes.ts), not damage
    const torn = isLast && scan.damaged.length ? await mendTornWrites(dir, file, scan.damaged, lastEnd, log) : { tornBytes: 0, tornRecords: 0 };
    tornBytes += torn.tornBytes;
    const failed = scan.checksumFailures - torn.tornRecords;
    const skipped = scan.skippedBytes - torn.tornBytes;
    checksumFailures += failed;
    skippedBytes += skipped;
    if (failed > 0 || skipped > 0) log('warn', `recovery: ${file}${SEGMENT_EXT}: ${failed} records failed their checksum, ${skipped} bytes skipped`);
    all.push({
      file,
      validTotalSize: valid,
      contiguousTop: top,
      left: undefined,
      right: undefined,
      // the current file is cut after its last valid record (torn tail and trailing garbage)
      fileSize: isLast ? lastEnd : scan.fileSize,
      locked: false,
      readers: 0,
    });
    if (Date.now() - lastReport >= PROGRESS_MS) {
      lastReport = Date.now();
      log('info', `recovery: ${i + 1}/${files.length} segment files done (${hinted.size} from their hints, ${Math.round(scannedBytes / 1048576)} MiB scanned)`);
    }
  }
  const lostMessages = refs.inMemory.size;
  const unfound = refs.spilled ? undefined : new Set(refs.inMemory.keys());
  await dropUnclaimed(index, refs, log);

  // Empty files other than the current one go; the others are made durable
  // (their bytes may have been written but never fsynced before the crash),
  // except those read from a hint: a hint is written after its file's fsync.
  const kept: FileSummary[] = [];
  let deletedFiles = 0;
  for (let i = 0; i < all.length; i++) {
    const s = all[i];
    if (s.validTotalSize === 0 && i < all.length - 1) {
      await fsp.rm(segmentPath(dir, s.file), { force: true });
      await removeHint(dir, s.file, false);
      hints.delete(s.file);
      deletedFiles++;
      continue;
    }
    if (i < all.length - 1 && !hinted.has(s.file)) {
      const fh = await fsp.open(segmentPath(dir, s.file), 'r+');
      try {
        await fh.datasync();
      } finally {
        await fh.close();
      }
    }
    kept.push(s);
  }
  for (let i = 0; i < kept.length; i++) {
    kept[i].left = i > 0 ? kept[i - 1].file : undefined;
    kept[i].right = i < kept.length - 1 ? kept[i + 1].file : undefined;
  }
  if (deletedFiles) await fsyncDir(dir);
  const cur = kept[kept.length - 1];
  log(
    'info',
    `recovery: ${files.length} segment files in ${Date.now() - started} ms: ${hinted.size} read from their hints, ` +
      `${files.length - hinted.size} scanned (${Math.round(scannedBytes / 1048576)} MiB)`,
  );
  return {
    summaries: kept,
    current: cur.file,
    currentSize: cur.fileSize,
    checksumFailures,
    skippedBytes,
    tornBytes,
    deletedFiles,
    lostMessages,
    unfound,
    hintedFiles: hinted.size,
    hints: [...hints].map(([file, data]) => ({ file, data })),
  };
}

/** Referenced messages that no segment file holds intact are forgotten: their queues drop them when they recover. */
async function dropUnclaimed(index: Index, refs: CountedRefs, log: Logger): Promise<void> {
  if (refs.spilled) await index.deleteByFile([UNPLACED_FILE]);
  else if (refs.inMemory.size > 0) {
    log('warn', `recovery: ${refs.inMemory.size} referenced messages have no intact record in any segment file`);
    refs.inMemory.clear();
  }
}

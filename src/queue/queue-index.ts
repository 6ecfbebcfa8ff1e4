/**
 * The persistent index of one durable queue: a journal of publish, deliver and
 * ack records for its persistent messages, folded into seq-range segment files
 * (segment-files.ts) when it grows, plus a clean marker written by a clean stop.
 *
 * Appends go to the journal (fsynced by the queue's group commit before any
 * confirm) and to an in-memory copy of it (journal-state.ts), bounded by the
 * fold threshold. A fold rewrites every segment the journal touches (fsync,
 * rename, directory fsync) and only then truncates the journal; replay is
 * segments then journal, which is idempotent, so a crash anywhere in a fold
 * loses and resurrects nothing. Live entries are read segment by segment, so
 * memory does not grow with the queue's length.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { fsyncDir, sealJson, unsealJson, writeFileAtomic } from '../store/fs-util';
import { JournalFile, JournalFiles } from './journal-files';
import { DamagedRange, JournalEntry, RecordType, decodeRecords, encodePublish, encodeSeqs } from './journal-codec';
import { DELIVERED, JournalState, overlay } from './journal-state';
import { LayoutError, SegmentSummary, layoutsMatchingSegments, listSegments, readLayout, readSegment, summarize, writeLayout, writeSegment } from './segment-files';
import { SerialQueue } from '../util/serial-queue';

const JOURNAL = 'journal';

/** Journal descriptors of every queue index in the process (`--max-open-journals`). */
export const sharedJournalFiles = new JournalFiles();

/** The index failed a write, fsync or fold: it refuses everything after. `code` is the system error's (ENOSPC, EIO, ...). */
export class QueueIndexFailedError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'QueueIndexFailedError';
  }
}
const CLEAN = 'clean.json';
/**
 * Version of the sealed clean marker (unversioned, unsealed markers of 0.1 are
 * not trusted: one scan). Readers take only their own version; a field added
 * without changing the meaning of any other (deliveryCounts) keeps it, so an
 * older reader reads every field it knows correctly and skips the new one.
 */
const CLEAN_VERSION = 2;
export const DEFAULT_SEGMENT_ENTRIES = 16384;
export const DEFAULT_JOURNAL_ENTRIES = 16384;

export interface CleanTerms {
  nextSeq: number;
  /** Live entries and their bytes. */
  count: number;
  bytes?: number;
  /** Live entries with an expiry. */
  expiring?: number;
  /**
   * Every entry with a lower seq comes back delivered, and counts as delivered
   * once (delivery count 1, unless it has one in deliveryCounts): it may have
   * been delivered before a non-clean recovery set this.
   */
  redeliverBelow?: number;
  /** [seq, count ≥ 1] of the live entries with a delivery count, in seq order (absent: none). */
  deliveryCounts?: [number, number][];
  /** [segment, count, bytes, expiring] of each segment file: a clean start reads none of them. */
  segments?: [number, number, number, number][];
}

export type Logger = (level: 'info' | 'warn' | 'error', msg: string) => void;

export interface QueueIndexOptions {
  log: Logger;
  /** Seqs per segment, for an index created now (an existing one keeps its own). */
  segmentEntries?: number;
  /** The descriptor pool of the journal (default: the one shared by the process). */
  journalFiles?: JournalFiles;
  /** Fold the journal into the segments once it has records for this many seqs. */
  journalEntries?: number;
}

export interface OpenOptions extends QueueIndexOptions {
  /** Terms of the clean stop, trusted when they match the files. */
  terms?: CleanTerms;
  /**
   * Non-clean recovery: every live entry is checked against the store (those
   * whose body is missing were never confirmed and are dropped), and every
   * recovered entry comes back delivered. Asked a segment's live ids at a
   * time, with the segment's number; answers whether each body is there.
   */
  contains?: (ids: Buffer[], segment: number) => Promise<boolean[]>;
}

export interface Recovery {
  /** Live entries and their bytes, and how many of them have an expiry. */
  count: number;
  bytes: number;
  expiring: number;
  /** One past the highest seq known. */
  nextSeq: number;
  /** Entries dropped because their body is not in the store. */
  dropped: number;
  /** Whether the segments were scanned (no usable clean terms). */
  scanned: boolean;
  /** Entries below this seq may have been delivered before (see CleanTerms.redeliverBelow). */
  redeliverBelow: number;
  /** [seq, count] of live entries with a delivery count, from the clean terms (none after a non-clean stop). */
  deliveryCounts: [number, number][];
}

interface LoadedJournal {
  state: JournalState;
  validBytes: number;
  fileBytes: number;
  /** Damaged ranges between good records (skipped), and a damaged tail (cut). */
  skipped: DamagedRange[];
  tail?: DamagedRange;
  maxSeq: number;
}

async function loadJournal(dir: string, segmentEntries: number): Promise<LoadedJournal> {
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
async function* liveBySegment(
  dir: string,
  files: readonly number[],
  journal: JournalState,
  report?: (msg: string) => void,
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
async function readOrInferLayout(dir: string, configured: number | undefined, log?: Logger, rewrite = false): Promise<{ segmentEntries: number | undefined; inferred?: number }> {
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
 * Reads and deletes a queue's clean marker; undefined if there is none, or it
 * cannot be read or trusted (the open is then non-clean: the index is scanned).
 */
export async function consumeCleanMarker(dir: string): Promise<CleanTerms | undefined> {
  const file = path.join(dir, CLEAN);
  let data: Buffer;
  try {
    data = await fsp.readFile(file);
  } catch {
    return undefined;
  }
  await fsp.rm(file, { force: true });
  return parseCleanTerms(data);
}

const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
/** Delivery counts on the wire are 32 bits. */
export const MAX_DELIVERY_COUNT = 0xffffffff;
const deliveryCount = (v: unknown): v is number => count(v) && v >= 1 && v <= MAX_DELIVERY_COUNT;

/**
 * A clean marker's terms, or undefined if the bytes are not one: the marker
 * is sealed (a SHA-256 line over its JSON, as the store's state files) and
 * versioned, so a flipped digit is never trusted as a figure.
 */
export function parseCleanTerms(data: Buffer): CleanTerms | undefined {
  const t = unsealJson(data) as (Partial<CleanTerms> & { version?: unknown }) | undefined;
  if (typeof t !== 'object' || t === null || t.version !== CLEAN_VERSION || !count(t.nextSeq) || !count(t.count)) return undefined;
  const terms: CleanTerms = { nextSeq: t.nextSeq, count: t.count };
  if (count(t.bytes)) terms.bytes = t.bytes;
  if (count(t.expiring)) terms.expiring = t.expiring;
  if (count(t.redeliverBelow)) terms.redeliverBelow = t.redeliverBelow;
  if (Array.isArray(t.segments) && t.segments.every((s) => Array.isArray(s) && s.length === 4 && s.every(count))) {
    terms.segments = t.segments;
  }
  if (t.deliveryCounts !== undefined) {
    // Dropping counts would let a message escape its delivery limit: terms with unreadable ones are not trusted at all.
    const dc: unknown = t.deliveryCounts;
    if (!Array.isArray(dc) || !dc.every((e) => Array.isArray(e) && e.length === 2 && count(e[0]) && deliveryCount(e[1]))) return undefined;
    terms.deliveryCounts = dc as [number, number][];
  }
  return terms;
}

export class QueueIndex {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Serializes every file operation: journal writes, folds, segment reads. */
  private readonly io = new SerialQueue();
  private closed = false;
  private foldQueued = false;
  /** Opening: no fold may start while the recovery scan reads the segments. */
  private opening = true;
  /** An I/O failure of a fold: the index no longer knows what is durable. */
  private failed: Error | null = null;
  private readonly log: Logger;
  private readonly journalEntries: number;

  private constructor(
    readonly dir: string,
    private readonly journalFile: JournalFile,
    private readonly journal: JournalState,
    /** Segment files on disk and what each holds. */
    private readonly segments: Map<number, SegmentSummary>,
    private redeliverBelow: number,
    opts: QueueIndexOptions,
  ) {
    this.log = opts.log;
    this.journalEntries = opts.journalEntries ?? DEFAULT_JOURNAL_ENTRIES;
  }

  get segmentEntries(): number {
    return this.journal.segmentEntries;
  }

  /** Seqs held by the in-memory journal (bounded by the fold threshold, plus what arrives during a fold). */
  get journalSize(): number {
    return this.journal.size;
  }

  /**
   * Opens (creating if needed) the queue's index. With usable clean terms no
   * segment is read; otherwise every segment is streamed once to count the
   * live entries (and, non-clean, to check them against the store).
   */
  static async open(dir: string, opts: OpenOptions): Promise<{ index: QueueIndex; recovery: Recovery }> {
    await fsp.mkdir(dir, { recursive: true });
    const files = await listSegments(dir, true);
    const found = await readOrInferLayout(dir, opts.segmentEntries, opts.log, true);
    let segmentEntries = found.segmentEntries;
    if (found.inferred) await writeLayout(dir, found.inferred);
    if (segmentEntries === undefined) {
      // No layout: a new index, or one written before segments existed (journal only).
      segmentEntries = files.length ? DEFAULT_SEGMENT_ENTRIES : (opts.segmentEntries ?? DEFAULT_SEGMENT_ENTRIES);
      await writeLayout(dir, segmentEntries);
    }
    const loaded = await loadJournal(dir, segmentEntries);
    const file = path.join(dir, JOURNAL);
    for (const d of loaded.skipped) {
      opts.log('error', `queue journal ${file}: ${d.reason} record at offset ${d.offset}, ${d.bytes} bytes skipped; the records after it are kept`);
    }
    if (loaded.tail) {
      // Cut before anything is appended, so no new record ever follows a damaged one.
      opts.log('warn', `queue journal ${file}: cut ${loaded.tail.bytes} bytes at offset ${loaded.tail.offset} (${loaded.tail.reason} tail)`);
      await fsp.truncate(file, loaded.validBytes);
    }
    // Created now (its directory entry made durable); its descriptor is opened when it is written.
    if (loaded.fileBytes === 0) {
      await (await fsp.open(file, 'a')).close();
      await fsyncDir(dir);
    }
    const fh = (opts.journalFiles ?? sharedJournalFiles).file(file);

    const terms = opts.terms;
    const segments = new Map<number, SegmentSummary>();
    const recovery: Recovery = { count: 0, bytes: 0, expiring: 0, nextSeq: loaded.maxSeq + 1, dropped: 0, scanned: false, redeliverBelow: 0, deliveryCounts: [] };
    // Counts survive a clean stop only; after a crash every entry counts as delivered once (redeliverBelow).
    const counted = opts.contains ? new Map<number, number>() : new Map(terms?.deliveryCounts ?? []);
    const trusted =
      !opts.contains &&
      terms?.segments !== undefined &&
      terms.bytes !== undefined &&
      terms.expiring !== undefined &&
      loaded.fileBytes === 0 &&
      terms.segments.length === files.length &&
      terms.segments.every(([n], i) => files[i] === n);
    let redeliverBelow = terms?.redeliverBelow ?? 0;
    const index = new QueueIndex(dir, fh, loaded.state, segments, 0, opts);
    if (trusted) {
      for (const [n, count, bytes, expiring] of terms.segments!) segments.set(n, { count, bytes, expiring });
      recovery.count = terms.count;
      recovery.bytes = terms.bytes!;
      recovery.expiring = terms.expiring!;
      recovery.nextSeq = terms.nextSeq;
      recovery.deliveryCounts = [...counted];
    } else {
      recovery.scanned = true;
      if (terms) recovery.nextSeq = Math.max(recovery.nextSeq, terms.nextSeq);
      for await (const { entries, n, fileSummary } of liveBySegment(dir, files, loaded.state, (msg) => opts.log('error', msg))) {
        if (fileSummary.count > 0) segments.set(n, fileSummary);
        const missing: number[] = [];
        const present = opts.contains ? await opts.contains(entries.map((e) => e.id), n) : undefined;
        for (let i = 0; i < entries.length; i++) {
          const e = entries[i];
          if (present && !present[i]) {
            missing.push(e.seq);
            continue;
          }
          recovery.count++;
          recovery.bytes += e.size;
          if (e.expiry >= 0) recovery.expiring++;
          if (e.seq >= recovery.nextSeq) recovery.nextSeq = e.seq + 1;
          const n = counted.get(e.seq);
          if (n !== undefined) recovery.deliveryCounts.push([e.seq, n]);
        }
        if (missing.length) {
          recovery.dropped += missing.length;
          index.acked(missing);
        }
      }
      // After a crash anything may have been seen: every recovered entry is redelivered.
      if (opts.contains) redeliverBelow = recovery.nextSeq;
    }
    index.redeliverBelow = redeliverBelow;
    recovery.redeliverBelow = redeliverBelow;
    index.opening = false;
    // Damage inside the journal: fold now, so the damaged bytes are gone from disk.
    if (loaded.skipped.length) await index.fold();
    else index.maybeFold();
    return { index, recovery };
  }

  publish(e: JournalEntry): void {
    this.append(encodePublish(e));
    this.journal.publish(e);
    this.maybeFold();
  }

  delivered(seqs: readonly number[]): void {
    if (!seqs.length) return;
    this.append(encodeSeqs(RecordType.DELIVER, seqs));
    for (const s of seqs) this.journal.delivered(s);
    this.maybeFold();
  }

  acked(seqs: readonly number[]): void {
    if (!seqs.length) return;
    this.append(encodeSeqs(RecordType.ACK, seqs));
    for (const s of seqs) this.journal.acked(s);
    this.maybeFold();
  }

  private append(rec: Buffer): void {
    if (this.closed) throw new Error(`queue index ${this.dir} is closed`);
    this.pending.push(rec);
    this.pendingBytes += rec.length;
  }

  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  /** Writes buffered records to the file (no fsync): enough to survive a process kill. */
  write(): Promise<void> {
    return this.enqueue(() => this.writePending());
  }

  /**
   * Writes buffered records and fsyncs: what was recorded before this call is
   * durable when it resolves. A failed fsync fails the index for good: the
   * kernel may have dropped the pages it could not write, so no later fsync
   * could prove them durable (the fsyncgate lesson).
   */
  sync(): Promise<void> {
    return this.enqueue(async () => {
      await this.writePending();
      try {
        await this.journalFile.datasync();
      } catch (e) {
        throw this.fail(e as Error, 'fsync');
      }
    });
  }

  /** Makes the index fail for good with `e`; returns the error to throw. */
  private fail(e: Error, what: string): Error {
    if (!this.failed) {
      this.failed = new QueueIndexFailedError(`queue index ${this.dir}: ${what} failed: ${e.message}`, (e as NodeJS.ErrnoException).code);
      this.log('error', this.failed.message);
    }
    return this.failed;
  }

  /** The error that failed the index, if one did. */
  get failure(): Error | null {
    return this.failed;
  }

  private maybeFold(): void {
    if (this.opening || this.foldQueued || this.closed || this.journal.size < this.journalEntries) return;
    this.foldQueued = true;
    this.fold().catch((e: Error) => this.log('error', `queue index ${this.dir}: fold failed: ${e.message}`));
  }

  /**
   * Folds everything recorded so far into the segment files and empties the
   * journal. Records appended meanwhile stay in the journal.
   */
  fold(): Promise<void> {
    return this.enqueue(async () => {
      this.foldQueued = false;
      const parts = this.journal.take();
      // Every pending record is in `parts`: the segments will hold them.
      this.pending = [];
      this.pendingBytes = 0;
      try {
        for (const n of [...parts.keys()].sort((a, b) => a - b)) {
          const live = this.segments.has(n) ? await readSegment(this.dir, n, (m) => this.log('error', m)) : new Map<number, JournalEntry>();
          overlay(live, parts.get(n));
          const summary = await writeSegment(
            this.dir,
            n,
            [...live.values()].sort((a, b) => a.seq - b.seq),
          );
          if (summary.count > 0) this.segments.set(n, summary);
          else this.segments.delete(n);
        }
        await fsyncDir(this.dir);
        // Only now is the journal redundant.
        await this.journalFile.truncate(0);
        await this.journalFile.datasync();
      } catch (e) {
        throw this.fail(e as Error, 'fold');
      }
    });
  }

  /**
   * Live entries with from ≤ seq < to and !skip(seq), in seq order, at most
   * `max`; `next` is where a following read continues (`to` when the range is
   * exhausted). Entries below the redelivery mark come back delivered. Reads
   * whole segments, one at a time, so memory stays bounded by a segment.
   */
  readLive(from: number, to: number, max: number, skip?: (seq: number) => boolean): Promise<{ entries: JournalEntry[]; next: number }> {
    return this.enqueue(async () => {
      const out: JournalEntry[] = [];
      if (to <= from || max <= 0) return { entries: out, next: Math.max(from, to) };
      const first = this.journal.segmentOf(from);
      const last = this.journal.segmentOf(to - 1);
      const nums = [...new Set([...this.segments.keys(), ...this.journal.segments()])].filter((n) => n >= first && n <= last).sort((a, b) => a - b);
      for (const n of nums) {
        const live = this.segments.has(n) ? await readSegment(this.dir, n, (m) => this.log('error', m)) : new Map<number, JournalEntry>();
        overlay(live, this.journal.segment(n));
        const picked = [...live.values()].filter((e) => e.seq >= from && e.seq < to && !skip?.(e.seq)).sort((a, b) => a.seq - b.seq);
        for (const e of picked) {
          out.push(e.seq < this.redeliverBelow ? { ...e, flags: e.flags | DELIVERED } : e);
          if (out.length === max) return { entries: out, next: e.seq + 1 };
        }
      }
      return { entries: out, next: to };
    });
  }

  /** Live entries, their bytes and how many have an expiry, in the segment files (exact once the journal is folded). */
  private totals(): { count: number; bytes: number; expiring: number } {
    const t = { count: 0, bytes: 0, expiring: 0 };
    for (const s of this.segments.values()) {
      t.count += s.count;
      t.bytes += s.bytes;
      t.expiring += s.expiring;
    }
    return t;
  }

  /**
   * Clean stop: folds the journal, then writes the clean marker, with the
   * delivery counts of live entries given ([seq, count], any order). Returns
   * the terms written.
   */
  async terminate(nextSeq: number, deliveryCounts: readonly [number, number][] = []): Promise<CleanTerms> {
    await this.fold();
    const terms: CleanTerms = await this.enqueue(async () => {
      const t: CleanTerms = {
        nextSeq,
        ...this.totals(),
        redeliverBelow: this.redeliverBelow,
        segments: [...this.segments.entries()].sort((a, b) => a[0] - b[0]).map(([n, s]) => [n, s.count, s.bytes, s.expiring]),
      };
      if (deliveryCounts.length) t.deliveryCounts = [...deliveryCounts].sort((a, b) => a[0] - b[0]);
      await writeFileAtomic(path.join(this.dir, CLEAN), sealJson({ version: CLEAN_VERSION, ...t }));
      return t;
    });
    await this.close();
    return terms;
  }

  /** Writes what is buffered and closes, leaving no clean marker. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.write().catch(() => undefined);
    this.closed = true;
    await this.io.idle();
    await this.journalFile.close();
  }

  /** Closes and removes the queue's directory. */
  async destroy(): Promise<void> {
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.closed) {
      this.closed = true;
      await this.io.idle();
      await this.journalFile.close().catch(() => undefined);
    }
    await fsp.rm(this.dir, { recursive: true, force: true });
  }

  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    return this.io.run(() => {
      if (this.failed) throw this.failed;
      return task();
    });
  }

  /**
   * Appends the buffered records. They stay buffered until the write
   * succeeded; a failed write (which may have left part of a record in the
   * file) fails the index, so nothing is ever appended behind a torn record
   * in this session, and the next open cuts it.
   */
  private async writePending(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const n = this.pending.length;
    const buf = Buffer.concat(this.pending, this.pendingBytes);
    let off = 0;
    try {
      while (off < buf.length) {
        const { bytesWritten } = await this.journalFile.write(buf, off, buf.length - off);
        off += bytesWritten;
      }
    } catch (e) {
      throw this.fail(e as Error, `journal write (${off} of ${buf.length} bytes written)`);
    }
    this.pending.splice(0, n);
    this.pendingBytes -= buf.length;
  }
}

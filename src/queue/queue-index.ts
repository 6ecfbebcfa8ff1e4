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
 * memory does not grow with the queue's length. docs/QUEUE-INDEX.md is the
 * design; the parts live beside this file:
 *
 * - queue-dir.ts: the directory read as it is (layout, journal replay, live
 *   entries a segment at a time, `scanQueueIndex`) and made ready for an open;
 * - index-recovery.ts: what an open recovers, from clean terms or a scan;
 * - clean-marker.ts: the clean marker, read, checked and written;
 * - journal-writer.ts: buffered records, write and sync, the I/O line and
 *   the sticky failure;
 * - fold.ts: a fold's rewrite of the segment files.
 *
 * The names importers know this module by are exported here too.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { JournalFile, JournalFiles } from './journal-files';
import { JournalEntry, RecordType, encodePublish, encodeSeqs } from './journal-codec';
import { JournalState, overlaid, withDelivered } from './journal-state';
import { SegmentSummary, readSegment } from './index-segments';
import { SegmentCache, sharedSegmentCache } from './segment-cache';
import { CleanTerms, writeCleanMarker } from './clean-marker';
import type { Logger } from '../util/logger';
import { JOURNAL, prepareQueueDir } from './queue-dir';
import { RecoverOptions, Recovery, recoverIndex } from './index-recovery';
import { JournalWriter } from './journal-writer';
import { foldIntoSegments } from './fold';

export { MAX_DELIVERY_COUNT, consumeCleanMarker, parseCleanTerms } from './clean-marker';
export type { CleanTerms } from './clean-marker';
export { DEFAULT_SEGMENT_ENTRIES, scanQueueIndex } from './queue-dir';
export type { Recovery } from './index-recovery';
export { QueueIndexFailedError } from './journal-writer';

/** Journal descriptors of every queue index in the process (`--max-open-journals`). */
export const sharedJournalFiles = new JournalFiles();

export const DEFAULT_JOURNAL_ENTRIES = 16384;

export interface QueueIndexOptions {
  log: Logger;
  /** Decoded segments kept for window-by-window reads (default: the one shared by the process). */
  segmentCache?: SegmentCache;
  /** Seqs per segment, for an index created now (an existing one keeps its own). */
  segmentEntries?: number;
  /** The descriptor pool of the journal (default: the one shared by the process). */
  journalFiles?: JournalFiles;
  /** Fold the journal into the segments once it has records for this many seqs. */
  journalEntries?: number;
}

/** `terms` and `contains` are RecoverOptions' (index-recovery.ts). */
export interface OpenOptions extends QueueIndexOptions, RecoverOptions {}

export class QueueIndex {
  /** Buffered records, the I/O line and the sticky failure. */
  private readonly writer: JournalWriter;
  private closed = false;
  private foldQueued = false;
  /** Opening: no fold may start while the recovery scan reads the segments. */
  private opening = true;
  private readonly log: Logger;
  private readonly journalEntries: number;
  private readonly segmentCache: SegmentCache;
  /** Segment files read and decoded by readLive (the others came from the cache). */
  segmentReads = 0;

  private constructor(
    readonly dir: string,
    journalFile: JournalFile,
    private readonly journal: JournalState,
    /** Segment files on disk and what each holds. */
    private readonly segments: Map<number, SegmentSummary>,
    private redeliverBelow: number,
    opts: QueueIndexOptions,
  ) {
    this.log = opts.log;
    this.journalEntries = opts.journalEntries ?? DEFAULT_JOURNAL_ENTRIES;
    this.segmentCache = opts.segmentCache ?? sharedSegmentCache;
    this.writer = new JournalWriter(dir, journalFile, opts.log);
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
    const { files, loaded } = await prepareQueueDir(dir, opts.segmentEntries, opts.log);
    const fh = (opts.journalFiles ?? sharedJournalFiles).file(path.join(dir, JOURNAL));
    const segments = new Map<number, SegmentSummary>();
    const index = new QueueIndex(dir, fh, loaded.state, segments, 0, opts);
    const recovery = await recoverIndex(dir, files, loaded, opts, segments, (missing) => index.acked(missing));
    index.redeliverBelow = recovery.redeliverBelow;
    index.opening = false;
    // Damage inside the journal: fold now, so the damaged bytes are gone from disk.
    if (loaded.skipped.length) await index.foldJournal();
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
    this.writer.push(rec);
  }

  get bufferedBytes(): number {
    return this.writer.bufferedBytes;
  }

  /** Writes buffered records to the file (no fsync): enough to survive a process kill. */
  write(): Promise<void> {
    return this.writer.write();
  }

  /** Writes buffered records and fsyncs; a failed fsync fails the index for good (JournalWriter.sync). */
  sync(): Promise<void> {
    return this.writer.sync();
  }

  /** The error that failed the index, if one did. */
  get failure(): Error | null {
    return this.writer.failure;
  }

  private maybeFold(): void {
    if (this.opening || this.foldQueued || this.closed || this.journal.size < this.journalEntries) return;
    this.foldQueued = true;
    this.foldJournal().catch((e: Error) => this.log('error', `queue index ${this.dir}: fold failed: ${e.message}`));
  }

  /**
   * Folds everything recorded so far into the segment files and empties the
   * journal. Records appended meanwhile stay in the journal.
   */
  foldJournal(): Promise<void> {
    return this.writer.run(async () => {
      this.foldQueued = false;
      // The segments are about to change.
      this.segmentCache.drop(this);
      const parts = this.journal.take();
      // Every pending record is in `parts`: the segments will hold them.
      this.writer.discard();
      try {
        await foldIntoSegments(this.dir, parts, this.segments, (m) => this.log('error', m));
        // Only now is the journal redundant.
        await this.writer.truncate();
      } catch (e) {
        throw this.writer.fail(e as Error, 'fold');
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
    return this.writer.run(async () => {
      const out: JournalEntry[] = [];
      if (to <= from || max <= 0) return { entries: out, next: Math.max(from, to) };
      const first = this.journal.segmentOf(from);
      const last = this.journal.segmentOf(to - 1);
      const nums = [...new Set([...this.segments.keys(), ...this.journal.segments()])].filter((n) => n >= first && n <= last).sort((a, b) => a - b);
      for (const n of nums) {
        const file = this.segments.has(n) ? await this.segmentFile(n) : [];
        for (const e of overlaid(file, this.journal.segment(n), from, to)) {
          if (skip?.(e.seq)) continue;
          out.push(withDelivered(e, e.seq < this.redeliverBelow));
          if (out.length === max) return { entries: out, next: e.seq + 1 };
        }
      }
      return { entries: out, next: to };
    });
  }

  /** Segment n's file as decoded entries in seq order: from the cache, or read (runs on the writer's line, so no fold runs meanwhile). */
  private async segmentFile(n: number): Promise<readonly JournalEntry[]> {
    const hit = this.segmentCache.get(this, n);
    if (hit) return hit.entries;
    const live = await readSegment(this.dir, n, (m) => this.log('error', m));
    this.segmentReads++;
    const entries = [...live.values()].sort((a, b) => a.seq - b.seq);
    if (!this.closed) this.segmentCache.set(this, { n, entries });
    return entries;
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
    await this.foldJournal();
    const terms: CleanTerms = await this.writer.run(async () => {
      const t: CleanTerms = {
        nextSeq,
        ...this.totals(),
        redeliverBelow: this.redeliverBelow,
        segments: [...this.segments.entries()].sort((a, b) => a[0] - b[0]).map(([n, s]) => [n, s.count, s.bytes, s.expiring]),
      };
      if (deliveryCounts.length) t.deliveryCounts = [...deliveryCounts].sort((a, b) => a[0] - b[0]);
      await writeCleanMarker(this.dir, t);
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
    this.segmentCache.drop(this);
    await this.writer.idle();
    await this.writer.close();
  }

  /** Closes and removes the queue's directory. */
  async destroy(): Promise<void> {
    this.writer.discard();
    this.segmentCache.drop(this);
    if (!this.closed) {
      this.closed = true;
      await this.writer.idle();
      await this.writer.close().catch(() => undefined);
    }
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}

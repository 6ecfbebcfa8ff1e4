/**
 * What QueueIndex.open recovers once the directory is prepared
 * (queue-dir.ts): taken from the clean terms when they fit the files on disk
 * (no segment is read), or counted by streaming every segment once with the
 * journal over it. A non-clean recovery also checks each live entry against
 * the store, drops those whose body is missing, and marks every recovered
 * entry delivered.
 */
import { CleanTerms } from './clean-marker';
import type { Logger } from '../util/logger';
import { LoadedJournal, liveBySegment } from './queue-dir';
import { SegmentSummary } from './index-segments';

export interface RecoverOptions {
  log: Logger;
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

/**
 * Recovers the index of `dir` (segment files `files`, journal `loaded`):
 * fills `segments` with what each segment file holds, and acks away, through
 * `drop`, the entries whose body the store does not have.
 */
export async function recoverIndex(
  dir: string,
  files: readonly number[],
  loaded: LoadedJournal,
  opts: RecoverOptions,
  segments: Map<number, SegmentSummary>,
  drop: (seqs: number[]) => void,
): Promise<Recovery> {
  const terms = opts.terms;
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
        drop(missing);
      }
    }
    // After a crash anything may have been seen: every recovered entry is redelivered.
    if (opts.contains) redeliverBelow = recovery.nextSeq;
  }
  recovery.redeliverBelow = redeliverBelow;
  return recovery;
}

/**
 * What a queue's journal says since the last fold, per seq: the publish
 * record if it is there, and whether a deliver or an ack record followed.
 * Grouped by segment so a segment can be merged with its journal part alone.
 *
 * Applying a seq's state over a segment is idempotent (a publish replaces,
 * deliver sets a flag, ack removes): a segment that already holds some of
 * the journal (a crash after a fold renamed it, before the journal was
 * truncated) merges to the same result.
 */
import { JournalEntry, JournalRecord, RecordType } from './journal-codec';
import { nextTurn, turnBudget } from '../util/turn-budget';

export const DELIVERED = 4;

export interface SeqState {
  pub?: JournalEntry;
  delivered: boolean;
  acked: boolean;
}

export type SegmentJournal = Map<number, SeqState>;

export class JournalState {
  private bySegment = new Map<number, SegmentJournal>();
  private seqs = 0;

  constructor(readonly segmentEntries: number) {}

  /** Seqs with journal records: the journal's in-memory size. */
  get size(): number {
    return this.seqs;
  }

  segmentOf(seq: number): number {
    return Math.floor(seq / this.segmentEntries);
  }

  private state(seq: number): SeqState {
    const n = this.segmentOf(seq);
    let seg = this.bySegment.get(n);
    if (!seg) {
      seg = new Map();
      this.bySegment.set(n, seg);
    }
    let st = seg.get(seq);
    if (!st) {
      st = { delivered: false, acked: false };
      seg.set(seq, st);
      this.seqs++;
    }
    return st;
  }

  publish(e: JournalEntry): void {
    const st = this.state(e.seq);
    st.pub = e;
    st.delivered = false;
    st.acked = false;
  }

  delivered(seq: number): void {
    this.state(seq).delivered = true;
  }

  acked(seq: number): void {
    this.state(seq).acked = true;
  }

  apply(rec: JournalRecord): void {
    if (rec.type === RecordType.PUBLISH) this.publish(rec.entry);
    else if (rec.type === RecordType.DELIVER) for (const s of rec.seqs) this.delivered(s);
    else for (const s of rec.seqs) this.acked(s);
  }

  segment(n: number): SegmentJournal | undefined {
    return this.bySegment.get(n);
  }

  segments(): number[] {
    return [...this.bySegment.keys()];
  }

  /** Hands over everything recorded so far and starts empty. */
  take(): Map<number, SegmentJournal> {
    const all = this.bySegment;
    this.bySegment = new Map();
    this.seqs = 0;
    return all;
  }
}

/** Applies a segment's journal part to its live entries (keyed by seq), in place. */
export function overlay(live: Map<number, JournalEntry>, part: SegmentJournal | undefined): void {
  if (part) for (const [seq, st] of part) overlayOne(live, seq, st);
}

/** overlay(), going on in the next turn whenever the turn's budget is spent (a fold applies up to a journal's 16,384 records to a segment). */
export async function overlayInTurns(live: Map<number, JournalEntry>, part: SegmentJournal | undefined): Promise<void> {
  if (!part) return;
  let i = 0;
  for (const [seq, st] of part) {
    if ((++i & 255) === 0 && turnBudget.spent()) await nextTurn();
    overlayOne(live, seq, st);
  }
}

function overlayOne(live: Map<number, JournalEntry>, seq: number, st: SeqState): void {
  if (st.acked) {
    live.delete(seq);
  } else if (st.pub) {
    live.set(seq, st.delivered ? { ...st.pub, flags: st.pub.flags | DELIVERED } : st.pub);
  } else if (st.delivered) {
    const e = live.get(seq);
    if (e) live.set(seq, { ...e, flags: e.flags | DELIVERED });
  }
}

/**
 * The live entries with from ≤ seq < to of a segment file's entries (in seq
 * order) with its journal part applied, in seq order, as overlay() would
 * leave them; lazily, so a reader that needs a window of them pays for that
 * window (and one pass over the journal part), not for the whole segment.
 */
export function* overlaid(file: readonly JournalEntry[], part: SegmentJournal | undefined, from: number, to: number): Generator<JournalEntry> {
  // The journal's publishes in range, in seq order (those the file holds as well are met in the walk below).
  const pubs: number[] = [];
  if (part) for (const [seq, st] of part) if (st.pub && !st.acked && seq >= from && seq < to) pubs.push(seq);
  pubs.sort((a, b) => a - b);
  let i = firstAtOrAfter(file, from);
  let j = 0;
  for (;;) {
    const f = i < file.length && file[i].seq < to ? file[i].seq : Infinity;
    const p = j < pubs.length ? pubs[j] : Infinity;
    if (f === Infinity && p === Infinity) return;
    if (p < f) {
      const st = part!.get(p)!;
      j++;
      yield withDelivered(st.pub!, st.delivered);
      continue;
    }
    if (p === f) j++;
    const e = file[i++];
    const st = part?.get(e.seq);
    if (!st) yield e;
    else if (!st.acked) yield st.pub ? withDelivered(st.pub, st.delivered) : withDelivered(e, st.delivered);
  }
}

/** e, with the delivered flag set when `delivered`. */
export function withDelivered(e: JournalEntry, delivered: boolean): JournalEntry {
  return delivered ? { ...e, flags: e.flags | DELIVERED } : e;
}

/** The index of the first entry with seq ≥ from in entries sorted by seq. */
function firstAtOrAfter(entries: readonly JournalEntry[], from: number): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (entries[mid].seq < from) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

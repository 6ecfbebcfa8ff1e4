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
  if (!part) return;
  for (const [seq, st] of part) {
    if (st.acked) {
      live.delete(seq);
    } else if (st.pub) {
      live.set(seq, st.delivered ? { ...st.pub, flags: st.pub.flags | DELIVERED } : st.pub);
    } else if (st.delivered) {
      const e = live.get(seq);
      if (e) live.set(seq, { ...e, flags: e.flags | DELIVERED });
    }
  }
}

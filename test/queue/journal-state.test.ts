import { JournalEntry } from '../../src/queue/journal-codec';
import { DELIVERED, SegmentJournal, overlaid, overlay } from '../../src/queue/journal-state';
import { rng } from '../random';

const entry = (seq: number, flags: number): JournalEntry => ({ seq, id: Buffer.from([seq & 0xff]), flags, expiry: -1, size: seq });

describe('overlaid', () => {
  it('gives, window by window, what overlay() gives for the whole segment (random files and journal parts)', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const r = rng(seed);
      const S = 64;
      // The file: some seqs of the segment, flags 1 or delivered.
      const file = Array.from({ length: S }, (_, s) => s)
        .filter(() => r() < 0.6)
        .map((s) => entry(s, r() < 0.2 ? 1 | DELIVERED : 1));
      // The journal part: publishes (of new seqs, or again of file seqs, as after a crash mid-fold), delivers, acks.
      const part: SegmentJournal = new Map();
      for (let s = 0; s < S; s++) {
        if (r() < 0.5) continue;
        part.set(s, { pub: r() < 0.5 ? entry(s, 1) : undefined, delivered: r() < 0.3, acked: r() < 0.3 });
      }
      const whole = new Map(file.map((e) => [e.seq, e]));
      overlay(whole, part);
      const from = Math.floor(r() * S);
      const to = from + Math.floor(r() * (S - from + 1));
      const expected = [...whole.values()].filter((e) => e.seq >= from && e.seq < to).sort((a, b) => a.seq - b.seq);
      expect([seed, [...overlaid(file, part, from, to)]]).toEqual([seed, expected]);
      expect([...overlaid(file, undefined, from, to)]).toEqual(file.filter((e) => e.seq >= from && e.seq < to));
    }
  });
});

import { ReadyList } from '../../src/queue/ready-list';

const seqs = (l: ReadyList<{ seq: number }>) => [...l].map((x) => x.seq);

describe('ReadyList', () => {
  it('is FIFO in seq order', () => {
    const l = new ReadyList<{ seq: number }>();
    for (let i = 0; i < 5000; i++) l.push({ seq: i });
    for (let i = 0; i < 4000; i++) expect(l.shift()?.seq).toBe(i);
    expect(l.length).toBe(1000);
    expect(l.at(0)?.seq).toBe(4000);
  });

  it('merges requeued items back in seq order', () => {
    const l = new ReadyList<{ seq: number }>();
    for (const s of [1, 2, 3, 4, 5, 6]) l.push({ seq: s });
    const a = l.shift()!;
    const b = l.shift()!;
    l.insert([b, a]);
    expect(seqs(l)).toEqual([1, 2, 3, 4, 5, 6]);
    l.insert([{ seq: 0 }, { seq: 4.5 }, { seq: 9 }]);
    expect(seqs(l)).toEqual([0, 1, 2, 3, 4, 4.5, 5, 6, 9]);
    l.push({ seq: 7 });
    expect(seqs(l)).toEqual([0, 1, 2, 3, 4, 4.5, 5, 6, 7, 9]);
    expect(l.firstAfter(4)).toBe(5);
    expect([l.get(4.5)?.seq, l.get(0)?.seq, l.get(9)?.seq, l.get(8), l.get(-1), l.get(10)]).toEqual([4.5, 0, 9, undefined, undefined, undefined]);
    expect(l.clear().length).toBe(10);
    expect(l.length).toBe(0);
    expect(l.shift()).toBeUndefined();
  });
});

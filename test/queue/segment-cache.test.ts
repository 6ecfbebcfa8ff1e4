import { SegmentCache } from '../../src/queue/segment-cache';

const seg = (n: number) => ({ n, entries: [{ seq: n, id: Buffer.alloc(16), flags: 1, expiry: -1, size: 1 }] });

describe('SegmentCache', () => {
  it('holds one segment an owner and at most its limit, the least recently used going first', () => {
    const c = new SegmentCache(2);
    const [a, b, d] = [{}, {}, {}];
    c.set(a, seg(0));
    c.set(a, seg(1));
    expect(c.size).toBe(1);
    expect(c.get(a, 0)).toBeUndefined();
    expect(c.get(a, 1)?.n).toBe(1);
    c.set(b, seg(7));
    expect(c.get(a, 1)?.n).toBe(1); // a is now the most recent
    c.set(d, seg(3));
    expect([c.size, c.get(b, 7), c.get(a, 1)?.n, c.get(d, 3)?.n]).toEqual([2, undefined, 1, 3]);
    c.drop(a);
    expect([c.size, c.get(a, 1)]).toEqual([1, undefined]);
  });
});

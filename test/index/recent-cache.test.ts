import { RecentCache } from '../../src/index/recent-cache';

describe('RecentCache', () => {
  it('holds at most its capacity and keeps what was used within the last capacity/2 insertions', () => {
    const c = new RecentCache<number>(100);
    for (let i = 0; i < 1000; i++) {
      c.set(`k${i}`, i);
      expect(c.size).toBeLessThanOrEqual(100);
    }
    for (let i = 950; i < 1000; i++) expect(c.get(`k${i}`)).toBe(i);
    expect(c.get('k0')).toBeUndefined();
  });

  it('keeps an entry that is read often, however many others pass through', () => {
    const c = new RecentCache<number>(10);
    c.set('hot', 1);
    for (let i = 0; i < 1000; i++) {
      c.set(`k${i}`, i);
      expect(c.get('hot')).toBe(1);
    }
  });

  it('set replaces, delete removes from both generations, clear empties', () => {
    const c = new RecentCache<string>(4);
    c.set('a', '1');
    c.set('b', '2');
    c.set('c', '3'); // a and b are now old
    c.set('a', 'x');
    expect(c.get('a')).toBe('x');
    c.delete('b');
    expect(c.get('b')).toBeUndefined();
    expect(c.size).toBe(2);
    c.clear();
    expect(c.size).toBe(0);
    expect(c.get('c')).toBeUndefined();
  });
});

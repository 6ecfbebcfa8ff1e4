import { WriteCache } from '../../src/store/write-cache';

describe('WriteCache', () => {
  const b = (n: number) => Buffer.alloc(n, 1);

  test('an appended entry goes once the bytes of its record have reached the file, not before', () => {
    const c = new WriteCache();
    c.add('a', b(10));
    c.add('b', b(20));
    c.written('a');
    c.appended('a', 3, 100);
    c.written('b');
    c.appended('b', 3, 150);
    c.reached(3, 99);
    expect([c.get('a'), c.get('b')].map((x) => x?.length)).toEqual([10, 20]);
    c.reached(3, 100);
    expect(c.get('a')).toBeUndefined();
    expect(c.get('b')?.length).toBe(20);
    expect(c.bytes).toBe(20);
    c.reached(3, 150);
    expect(c.size).toBe(0);
    expect(c.bytes).toBe(0);
  });

  test('an entry with a write still pending stays until the roll; an entry never appended is untouched', () => {
    const c = new WriteCache();
    c.add('a', b(10));
    c.add('a', b(10)); // a second write of the same id, not yet processed
    c.written('a');
    c.appended('a', 0, 50);
    c.add('z', b(5)); // posted, not processed yet
    c.reached(0, 1000);
    expect(c.get('a')?.length).toBe(10);
    expect(c.get('z')?.length).toBe(5);
    c.written('a');
    c.written('z');
    c.dropAllIdle();
    expect(c.size).toBe(0);
  });

  test('records of an earlier file are past the OS whatever the offset; a re-added id is a new entry', () => {
    const c = new WriteCache();
    c.add('a', b(10));
    c.written('a');
    c.appended('a', 1, 900);
    c.add('e', b(3));
    c.written('e');
    c.appended('e', 1, 950);
    c.dropIfIdle('a'); // removed, then written again: the old record's notice must not drop the new entry
    c.add('a', b(11));
    c.written('a');
    c.appended('a', 2, 40);
    c.reached(2, 0);
    expect(c.get('e')).toBeUndefined();
    expect(c.get('a')?.length).toBe(11);
    c.reached(2, 40);
    expect(c.get('a')).toBeUndefined();
  });
});

/**
 * The behaviour every Index implementation must have, run against each one.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { IndexFactory, NOT_IN_MEMORY } from '../../src/index/types';

const id = (n: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(n, 12);
  return b;
};

export function describeIndexConformance(name: string, factory: IndexFactory): void {
  describe(`Index conformance: ${name}`, () => {
    let dir: string;
    beforeEach(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), `warren-index-${name}-`));
    });
    afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

    it('reads its own writes at once, before and after a flush', async () => {
      const { index, recovered } = await factory.open(dir, false);
      expect(recovered).toBe(false);
      index.insert(id(1), { refCount: 1, file: 0, offset: 0, totalSize: 100 });
      expect(await index.lookup(id(1))).toEqual({ refCount: 1, file: 0, offset: 0, totalSize: 100 });
      await index.updateFields(id(1), { refCount: 3, offset: 2 ** 40 });
      expect(await index.lookup(id(1))).toEqual({ refCount: 3, file: 0, offset: 2 ** 40, totalSize: 100 });
      await index.flush();
      expect(await index.lookup(id(1))).toEqual({ refCount: 3, file: 0, offset: 2 ** 40, totalSize: 100 });
      index.update(id(1), { refCount: 2, file: 5, offset: 7, totalSize: 100 });
      index.delete(id(1));
      expect(await index.lookup(id(1))).toBeUndefined();
      await index.updateFields(id(9), { refCount: 1 }); // missing: no-op
      expect(await index.lookup(id(9))).toBeUndefined();
      expect(index.size()).toBe(0);
      await index.terminate();
    });

    it('lookupNow answers what lookup answers, or says only lookup can tell; its entry is a copy', async () => {
      let { index } = await factory.open(dir, false);
      for (let i = 0; i < 3000; i++) index.insert(id(i), { refCount: 1, file: 0, offset: i, totalSize: 10 });
      index.delete(id(7));
      const now = index.lookupNow(id(5));
      expect(now).toEqual({ refCount: 1, file: 0, offset: 5, totalSize: 10 });
      if (now && now !== NOT_IN_MEMORY) now.refCount = 99;
      expect(await index.lookup(id(5))).toEqual({ refCount: 1, file: 0, offset: 5, totalSize: 10 });
      expect(index.lookupNow(id(7))).toBeUndefined();
      expect(index.lookupNow(id(123_456))).toBeUndefined(); // never written (a Bloom filter may say so too)
      await index.terminate();
      // reopened clean: entries may be on disk only; whatever lookupNow answers, lookup agrees
      ({ index } = await factory.open(dir, true));
      for (const i of [0, 5, 7, 2999, 123_456]) {
        const answer = index.lookupNow(id(i));
        const full = await index.lookup(id(i));
        if (answer !== NOT_IN_MEMORY) expect(answer).toEqual(full);
        expect(full).toEqual(i === 7 || i === 123_456 ? undefined : { refCount: 1, file: 0, offset: i, totalSize: 10 });
      }
      await index.terminate();
    });

    it('deletes by file, including the highest file number (the store marks unplaced records with it)', async () => {
      const { index } = await factory.open(dir, false);
      for (let i = 0; i < 300; i++) index.insert(id(i), { refCount: 1, file: [0xffffffff, 0, 1][i % 3], offset: i * 10, totalSize: 10 });
      await index.flush();
      // move one record of file 0 to file 1 (as compaction does): deleteByFile(0) must keep it
      await index.updateFields(id(1), { file: 1, offset: 5 });
      await index.deleteByFile([0xffffffff, 0]);
      const left = new Map<number, number>();
      for await (const [k, l] of index.entries()) left.set(k.readUInt32BE(12), l.file);
      expect(left.size).toBe(101);
      expect([...left.values()].every((f) => f === 1)).toBe(true);
      expect(left.get(1)).toBe(1);
      expect(index.size()).toBe(101);
      await index.terminate();
    });

    it('is trusted after a clean terminate, once', async () => {
      const first = await factory.open(dir, false);
      for (let i = 0; i < 1000; i++) first.index.insert(id(i), { refCount: 1 + (i % 4), file: i % 5, offset: i, totalSize: 50 });
      first.index.delete(id(7));
      await first.index.terminate();
      const again = await factory.open(dir, true);
      expect(again.recovered).toBe(true);
      expect(again.index.size()).toBe(999);
      expect(await again.index.lookup(id(8))).toEqual({ refCount: 1, file: 3, offset: 8, totalSize: 50 });
      expect(await again.index.lookup(id(7))).toBeUndefined();
      // no terminate (a crash): the next open is not clean and starts empty
      await again.index.abandon();
      const third = await factory.open(dir, true);
      expect(third.recovered).toBe(false);
      expect(third.index.size()).toBe(0);
      expect(await third.index.lookup(id(8))).toBeUndefined();
      await third.index.terminate();
    });

    it('starts empty when the store says the stop was not clean', async () => {
      const first = await factory.open(dir, false);
      first.index.insert(id(1), { refCount: 1, file: 0, offset: 0, totalSize: 1 });
      await first.index.terminate();
      const again = await factory.open(dir, false);
      expect(again.recovered).toBe(false);
      expect(await again.index.lookup(id(1))).toBeUndefined();
      await again.index.terminate();
    });

    it('a ref-count change racing a compaction move keeps both (updateFields merges into the latest value)', async () => {
      const { index } = await factory.open(dir, false);
      for (let i = 0; i < 100; i++) index.insert(id(i), { refCount: 1, file: 3, offset: i * 10, totalSize: 10 });
      await index.flush();
      for (let i = 0; i < 100; i++) {
        const bump = index.updateFields(id(i), { refCount: 2 });
        const move = index.updateFields(id(i), { file: 1, offset: 5000 + i }); // as compaction moves a record
        await Promise.all([bump, move]);
        expect(await index.lookup(id(i))).toEqual({ refCount: 2, file: 1, offset: 5000 + i, totalSize: 10 });
      }
      await index.terminate();
    });

    it('clear drops everything', async () => {
      const { index } = await factory.open(dir, false);
      for (let i = 0; i < 50; i++) index.insert(id(i), { refCount: 1, file: 0, offset: i, totalSize: 1 });
      await index.clear();
      expect(index.size()).toBe(0);
      const all = [];
      for await (const e of index.entries()) all.push(e);
      expect(all).toEqual([]);
      await index.terminate();
    });
  });
}

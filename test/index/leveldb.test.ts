import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { levelDbIndexFactory, leveldbIndexFactory } from '../../src/index/leveldb';
import { describeIndexConformance } from './index-conformance';

describeIndexConformance('leveldb', leveldbIndexFactory);

const id = (n: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(n, 12);
  return b;
};

describe('LevelDB index', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-leveldb-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('serves lookups correctly with a tiny cache (entries evicted and read back from LevelDB)', async () => {
    const { index } = await levelDbIndexFactory({ cacheEntries: 8 }).open(dir, false);
    for (let i = 0; i < 500; i++) index.insert(id(i), { refCount: 1, file: i % 7, offset: i * 3, totalSize: 9 });
    await index.flush();
    for (let i = 499; i >= 0; i -= 13) expect(await index.lookup(id(i))).toEqual({ refCount: 1, file: i % 7, offset: i * 3, totalSize: 9 });
    await index.terminate();
  });

  it('rebuilds, with a warning, from a corrupt directory marked clean', async () => {
    const first = await leveldbIndexFactory.open(dir, false);
    first.index.insert(id(1), { refCount: 1, file: 0, offset: 0, totalSize: 1 });
    await first.index.terminate();
    // garble LevelDB's own files
    const dbDir = path.join(dir, 'leveldb');
    for (const f of fs.readdirSync(dbDir)) if (/^(CURRENT|MANIFEST)/.test(f)) fs.writeFileSync(path.join(dbDir, f), 'garbage');
    const warnings: string[] = [];
    const again = await levelDbIndexFactory({ warn: (m) => warnings.push(m) }).open(dir, true);
    expect(again.recovered).toBe(false);
    expect(warnings.join()).toMatch(/cannot be opened.*rebuilding/);
    expect(await again.index.lookup(id(1))).toBeUndefined();
    again.index.insert(id(2), { refCount: 1, file: 0, offset: 0, totalSize: 1 });
    expect(await again.index.lookup(id(2))).toBeDefined();
    await again.index.terminate();
  });

  it('a lookup racing a compaction update sees a whole location, old or new', async () => {
    const { index } = await leveldbIndexFactory.open(dir, false);
    index.insert(id(1), { refCount: 2, file: 3, offset: 100, totalSize: 50 });
    await index.flush();
    const seen = index.lookup(id(1));
    index.update(id(1), { refCount: 2, file: 1, offset: 900, totalSize: 50 });
    const l = await seen;
    expect([JSON.stringify({ refCount: 2, file: 3, offset: 100, totalSize: 50 }), JSON.stringify({ refCount: 2, file: 1, offset: 900, totalSize: 50 })]).toContain(JSON.stringify(l));
    expect(await index.lookup(id(1))).toEqual({ refCount: 2, file: 1, offset: 900, totalSize: 50 });
    await index.terminate();
  });

  it('moves and deletes of entries evicted from the cache keep deleteByFile and size right (stale per-file keys tolerated)', async () => {
    const { index } = await levelDbIndexFactory({ cacheEntries: 2 }).open(dir, false);
    for (let i = 0; i < 50; i++) index.insert(id(i), { refCount: 1, file: 1, offset: i * 10, totalSize: 10 });
    await index.flush();
    for (let i = 40; i < 50; i++) await index.lookup(id(i)); // evicts 0..9 from the cache
    for (let i = 0; i < 10; i++) index.update(id(i), { refCount: 1, file: 2, offset: i * 10, totalSize: 10 });
    for (let i = 10; i < 20; i++) index.delete(id(i));
    await index.flush();
    expect(index.size()).toBe(40);
    await index.deleteByFile([1]);
    expect(index.size()).toBe(10);
    for (let i = 0; i < 10; i++) expect(await index.lookup(id(i))).toEqual({ refCount: 1, file: 2, offset: i * 10, totalSize: 10 });
    for (let i = 10; i < 50; i++) expect(await index.lookup(id(i))).toBeUndefined();
    const all: number[] = [];
    for await (const [k] of index.entries()) all.push(k.readUInt32BE(12));
    expect(all.sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await index.deleteByFile([2]);
    expect(index.size()).toBe(0);
    await index.terminate();
  });
});

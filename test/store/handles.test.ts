import { promises as fsp } from 'fs';
import { MessageStore } from '../../src/store';
import { HandleCache } from '../../src/store/handles';
import { segmentPath } from '../../src/store/segment-file';
import { body, mid, rmDir, tmpDir } from './helpers';

it('keeps at most maxOpenFiles read handles open (LRU), reading across many files', async () => {
  const dir = await tmpDir();
  try {
    const store = await MessageStore.open({ dir, fileSizeLimit: 1000, maxOpenFiles: 3 });
    const c = store.client('q');
    for (let i = 0; i < 60; i++) c.write(mid(i), body(i, 172)); // 5 records a file: 12 files
    await c.sync(Array.from({ length: 60 }, (_, i) => mid(i)));
    await store.quiesce();
    expect(store.stats().files).toBeGreaterThanOrEqual(12);
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 60; i += 5) {
        expect(await c.read(mid(i))).toEqual(body(i, 172));
        expect(store.stats().openHandles).toBeLessThanOrEqual(3);
      }
    }
    await store.close();
    expect(store.stats().openHandles).toBe(0);
  } finally {
    await rmDir(dir);
  }
});

it('never closes the handle a reader is about to use, when every other handle is in use', async () => {
  const dir = await tmpDir();
  try {
    for (const n of [0, 1]) await fsp.writeFile(segmentPath(dir, n), Buffer.from(`file ${n}`));
    const cache = new HandleCache(dir, 1);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let holding!: () => void;
    const isHeld = new Promise<void>((r) => (holding = r));
    // Reader A holds file 0's handle: the cache is full, with nothing it may close.
    const a = cache.use(0, async (fh) => {
      holding();
      await held;
      return (await fh.read(Buffer.alloc(6), 0, 6, 0)).buffer.toString();
    });
    await isHeld;
    // Reader B opens file 1 beyond the limit; it must get a handle that stays open until it is done.
    const b = await cache.use(1, async (fh) => (await fh.read(Buffer.alloc(6), 0, 6, 0)).buffer.toString());
    expect(b).toBe('file 1');
    release();
    expect(await a).toBe('file 0');
    await cache.closeAll();
    expect(cache.openCount).toBe(0);
  } finally {
    await rmDir(dir);
  }
});

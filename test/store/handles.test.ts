import { MessageStore } from '../../src/store';
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

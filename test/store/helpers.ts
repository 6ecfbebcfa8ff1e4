import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MessageStore } from '../../src/store';

export async function tmpDir(prefix = 'warren-store-'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function rmDir(dir: string): Promise<void> {
  await fsp.rm(dir, { recursive: true, force: true });
}

/** A fresh directory for each test of the enclosing block, removed after it; call the result for its path. */
export function freshDirEach(): () => string {
  let dir = '';
  beforeEach(async () => {
    dir = await tmpDir();
  });
  afterEach(async () => {
    await rmDir(dir);
  });
  return () => dir;
}

/** A 16-byte id from a number. */
export function mid(n: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(0x5741524e, 0);
  b.writeUInt32BE(n >>> 0, 12);
  b.writeUInt32BE(Math.floor(n / 2 ** 32), 8);
  return b;
}

/** A deterministic body for message n of `size` bytes. */
export function body(n: number, size = 100): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (n * 31 + i * 7) & 0xff;
  return b;
}

export async function* deltasOf(entries: Iterable<[Buffer, number]>): AsyncIterable<[Buffer, number]> {
  for (const e of entries) yield e;
}

/** Checks the file summary against the index and the files on disk. */
export async function checkInvariants(store: MessageStore): Promise<void> {
  await store.quiesce();
  const sums = store.fileSummaries();
  const st = store.stats();
  const perFile = new Map<number, number>();
  for await (const [, loc] of store.indexEntries()) {
    expect(loc.refCount).toBeGreaterThan(0);
    perFile.set(loc.file, (perFile.get(loc.file) ?? 0) + loc.totalSize);
  }
  let valid = 0;
  let size = 0;
  for (let i = 0; i < sums.length; i++) {
    const s = sums[i];
    expect(s.left).toBe(i > 0 ? sums[i - 1].file : undefined);
    expect(s.right).toBe(i < sums.length - 1 ? sums[i + 1].file : undefined);
    expect(s.validTotalSize).toBe(perFile.get(s.file) ?? 0);
    expect(s.contiguousTop).toBeLessThanOrEqual(s.validTotalSize);
    expect(s.validTotalSize).toBeLessThanOrEqual(s.fileSize);
    expect(s.locked).toBe(false);
    expect(s.readers).toBe(0);
    if (i < sums.length - 1) expect(s.validTotalSize).toBeGreaterThan(0);
    valid += s.validTotalSize;
    size += s.fileSize;
  }
  for (const f of perFile.keys()) expect(sums.some((s) => s.file === f)).toBe(true);
  expect(st.validBytes).toBe(valid);
  expect(st.fileBytes).toBe(size);
  expect(st.files).toBe(sums.length);
  expect(sums[sums.length - 1].file).toBe(st.currentFile);
}

export async function segmentFiles(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir)).filter((n) => n.endsWith('.rdq')).sort((a, b) => parseInt(a) - parseInt(b));
}

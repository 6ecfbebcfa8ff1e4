/**
 * Crash-state enumeration of the message store (see test/crash-recorder.ts):
 * a seeded workload of writes of mixed sizes (rolling small segment files),
 * removes (so that files empty out and compaction runs, with its temporary
 * file), syncs and a clean close, on the memory index, every file operation
 * recorded. At each crash image, dropped and torn, the store is reopened
 * with the reference counts a queue index would give (every message written
 * and not removed before the crash), and checked: the open succeeds; every
 * message whose sync resolved and that is still referenced is there, intact;
 * nothing unreferenced is; and a clean state is trusted only when it is sound.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MessageStore } from '../../src/store';
import { Recorder } from '../crash-recorder';
import { rng } from '../random';
import { body, deltasOf, mid } from './helpers';

// Each seed opens a store or an index a few hundred times: seconds, more on a loaded machine.
jest.setTimeout(120_000);
const SEEDS = Number(process.env.WARREN_CRASH_STATE_SEEDS ?? 3);
const BASE_SEED = Number(process.env.WARREN_CRASH_STATE_SEED ?? 1);
const LIMIT = 4096;

interface Write {
  n: number;
  size: number;
  issued: number;
  durableAt?: number;
}

async function workload(dir: string, random: () => number, rec: Recorder): Promise<{ writes: Write[]; removes: Map<number, number>; compactions: number }> {
  const store = await MessageStore.open({ dir, fileSizeLimit: LIMIT, index: 'memory', clientRefs: undefined, syncIntervalMs: 0 });
  const c = store.client('q');
  const writes: Write[] = [];
  const removes = new Map<number, number>(); // n → ops done when removed
  const live: number[] = [];
  let unsynced: Write[] = [];
  for (let step = 0; step < 160; step++) {
    const r = random();
    if (r < 0.5 || live.length === 0) {
      const w = { n: writes.length, size: 50 + Math.floor(random() * 600), issued: rec.ops };
      c.write(mid(w.n), body(w.n, w.size));
      writes.push(w);
      unsynced.push(w);
      live.push(w.n);
    } else if (r < 0.85) {
      const n = live.splice(Math.floor(random() * live.length), 1)[0];
      c.remove([mid(n)]);
      removes.set(n, rec.ops);
    } else {
      const covered = unsynced;
      unsynced = [];
      await c.sync(covered.map((w) => mid(w.n)));
      for (const w of covered) w.durableAt = rec.ops;
    }
  }
  const covered = unsynced;
  await c.sync(covered.map((w) => mid(w.n)));
  for (const w of covered) w.durableAt = rec.ops;
  await c.terminate();
  await store.close(); // lets a running compaction finish
  return { writes, removes, compactions: store.stats().compactions };
}

async function check(image: string, at: number, writes: Write[], removes: Map<number, number>): Promise<void> {
  const referenced = writes.filter((w) => w.issued < at && !((removes.get(w.n) ?? Infinity) < at));
  const store = await MessageStore.open({
    dir: image,
    fileSizeLimit: LIMIT,
    index: 'memory',
    clientRefs: ['q'],
    refDeltas: () => deltasOf(referenced.map((w) => [mid(w.n), 1] as [Buffer, number])),
  });
  const where = `crash before op ${at} (${path.basename(image)}${store.successfullyRecovered ? ', clean state trusted' : ''})`;
  try {
    const c = store.client('q');
    for (const w of referenced) {
      if (w.durableAt === undefined || w.durableAt > at) continue;
      const got = await c.read(mid(w.n));
      if (!got) throw new Error(`${where}: synced message ${w.n} lost`);
      if (!got.equals(body(w.n, w.size))) throw new Error(`${where}: message ${w.n} read back wrong`);
    }
    const refs = new Set(referenced.map((w) => w.n));
    for (const w of writes) if (!refs.has(w.n) && (await store.contains(mid(w.n)))) throw new Error(`${where}: unreferenced message ${w.n} is in the store`);
  } finally {
    await store.close();
  }
}

describe(`crash states of the message store (${SEEDS} seeds from ${BASE_SEED}; WARREN_CRASH_STATE_SEED replays)`, () => {
  it.each(Array.from({ length: SEEDS }, (_, i) => BASE_SEED + i))('seed %i: every crash image opens with every synced, referenced message intact', async (seed) => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-scs-'));
    const dir = path.join(base, 'store');
    const random = rng(seed);
    const rec = new Recorder(dir, path.join(base, 'images'), random);
    await rec.install();
    let result: Awaited<ReturnType<typeof workload>>;
    try {
      result = await workload(dir, random, rec);
    } finally {
      rec.uninstall();
    }
    expect(result.compactions).toBeGreaterThan(0);
    expect(rec.images.length).toBeGreaterThan(50);
    for (const img of rec.images) {
      for (const d of [img.dropped, img.torn]) await check(d, img.at, result.writes, result.removes);
    }
    fs.rmSync(base, { recursive: true, force: true });
  });
});

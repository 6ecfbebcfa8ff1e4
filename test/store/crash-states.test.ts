/**
 * Crash-state enumeration of the message store (see test/crash-recorder.ts):
 * a seeded workload of writes of mixed sizes (rolling small segment files),
 * removes (so that files empty out and compaction runs, with its temporary
 * file), syncs, a clean stop and start half-way and a clean close, on the
 * memory index, every file operation
 * recorded. At each crash image, dropped and torn, the store is reopened
 * with the reference counts a queue index would give (every message written
 * and not removed before the crash), and checked: the open succeeds; every
 * message whose sync resolved and that is still referenced is there, intact;
 * nothing unreferenced is; and a clean state is trusted only when it is sound.
 * The same runs on the LevelDB index, its directory opaque to the recorder
 * and settled after each of LevelDB's synced writes.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Level } from 'level';
import sinon from 'sinon';
import { MessageStore } from '../../src/store';
import { encodeRecord } from '../../src/store/record-codec';
import { fsyncDir } from '../../src/util/durable-file';
import { Recorder } from '../crash-recorder';
import { rng, rngBeside } from '../random';
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

type IndexKind = 'memory' | 'leveldb';

async function workload(dir: string, index: IndexKind, random: () => number, rec: Recorder): Promise<{ writes: Write[]; removes: Map<number, number>; compactions: number }> {
  let store = await MessageStore.open({ dir, fileSizeLimit: LIMIT, index, clientRefs: undefined, syncIntervalMs: 0 });
  let c = store.client('q');
  const writes: Write[] = [];
  const removes = new Map<number, number>(); // n → ops done when removed
  const live: number[] = [];
  let unsynced: Write[] = [];
  let compactions = 0;
  for (let step = 0; step < 160; step++) {
    if (step === 80) {
      // A clean stop and a clean start half-way: what the start consumes of the clean state must never be trusted again.
      await c.terminate();
      await store.close();
      compactions += store.stats().compactions;
      store = await MessageStore.open({ dir, fileSizeLimit: LIMIT, index, clientRefs: ['q'], syncIntervalMs: 0 });
      if (!store.successfullyRecovered) throw new Error('the clean stop half-way was not trusted');
      c = store.client('q');
    }
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
  return { writes, removes, compactions: compactions + store.stats().compactions };
}

/** Checks one crash image; true if its clean state was trusted. The store's warnings go to `warnings`. */
async function check(image: string, index: IndexKind, at: number, writes: Write[], removes: Map<number, number>, warnings: string[] = []): Promise<boolean> {
  const referenced = writes.filter((w) => w.issued < at && !((removes.get(w.n) ?? Infinity) < at));
  const store = await MessageStore.open({
    dir: image,
    fileSizeLimit: LIMIT,
    index,
    clientRefs: ['q'],
    refDeltas: () => deltasOf(referenced.map((w) => [mid(w.n), 1] as [Buffer, number])),
    log: (level, msg) => {
      if (level !== 'info') warnings.push(`${path.basename(image)}: ${msg}`);
    },
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
    return store.successfullyRecovered;
  } finally {
    await store.close();
  }
}

/** LevelDB's synced writes, seen from outside: after each, its directory is settled. */
function settleOnSync(rec: Recorder): sinon.SinonStub {
  const proto = Level.prototype as unknown as { put: (...a: unknown[]) => Promise<void> };
  const real = proto.put;
  return sinon.stub(proto, 'put').callsFake(async function (this: { location: string }, ...args: unknown[]) {
    await real.apply(this, args);
    if ((args[2] as { sync?: boolean } | undefined)?.sync) rec.settle(this.location);
  });
}

const CASES: [IndexKind, number][] = [
  ...Array.from({ length: SEEDS }, (_, i) => ['memory', BASE_SEED + i] as [IndexKind, number]),
  ...Array.from({ length: Math.max(1, Math.floor(SEEDS / 2)) }, (_, i) => ['leveldb', BASE_SEED + i] as [IndexKind, number]),
];

describe(`crash states of the message store (${SEEDS} seeds from ${BASE_SEED}; WARREN_CRASH_STATE_SEED replays)`, () => {
  it.each(CASES)('%s index, seed %i: every crash image opens with every synced, referenced message intact', async (index, seed) => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-scs-'));
    const dir = path.join(base, 'store');
    const random = rng(seed);
    const rec = new Recorder(dir, path.join(base, 'images'), rngBeside(seed));
    await rec.install();
    const stub = index === 'leveldb' ? settleOnSync(rec) : undefined;
    if (index === 'leveldb') rec.opaque(path.join(dir, 'index', 'leveldb'));
    let result: Awaited<ReturnType<typeof workload>>;
    try {
      result = await workload(dir, index, random, rec);
      rec.finish();
    } finally {
      stub?.restore();
      rec.uninstall();
    }
    expect(result.compactions).toBeGreaterThan(0);
    expect(rec.images.length).toBeGreaterThan(50);
    const trusted: string[] = [];
    const end = rec.images[rec.images.length - 1];
    const endWarnings: string[] = [];
    for (const img of rec.images) {
      for (const d of [img.dropped, img.torn]) if (await check(d, index, img.at, result.writes, result.removes, img === end ? endWarnings : [])) trusted.push(d);
    }
    // The images after the clean close are trusted, dropped (only what was synced) and torn alike;
    // if not, the store's warnings say why, with the last operations recorded.
    expect({ trusted: [end.dropped, end.torn].filter((d) => trusted.includes(d)), endWarnings, lastOps: rec.log.slice(-16) }).toEqual({
      trusted: [end.dropped, end.torn],
      endWarnings: [],
      lastOps: expect.any(Array),
    });
    fs.rmSync(base, { recursive: true, force: true });
  });
});

describe('a record a killed process left unsynced in the current file', () => {
  it('is made durable when the store reopens, before a sync of the same message can be answered from it', async () => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-scs-'));
    const dir = path.join(base, 'store');
    const rec = new Recorder(dir, path.join(base, 'images'), rng(1));
    await rec.install();
    const id = mid(7);
    try {
      // What a SIGKILL leaves: the record written to the current file, never fsynced (its name is durable).
      fs.mkdirSync(dir);
      await fsyncDir(base);
      const fh = await fs.promises.open(path.join(dir, '0.rdq'), 'w');
      await fh.write(encodeRecord(id, body(7, 300)));
      await fh.close();
      await fsyncDir(dir);
      const store = await MessageStore.open({ dir, clientRefs: ['a'], refDeltas: () => deltasOf([[id, 1]]) });
      expect(store.successfullyRecovered).toBe(false);
      // a second queue publishes the same message: the store already holds it, so the sync is answered at once
      const b = store.client('b');
      b.write(id, body(7, 300));
      await b.sync([id]);
      rec.finish();
      await store.close();
    } finally {
      rec.uninstall();
    }
    const end = rec.images[rec.images.length - 1];
    const after = await MessageStore.open({ dir: end.dropped, clientRefs: ['a', 'b'], refDeltas: () => deltasOf([[id, 2]]) });
    expect(await after.client('b').read(id)).toEqual(body(7, 300));
    await after.close();
    fs.rmSync(base, { recursive: true, force: true });
  });
});

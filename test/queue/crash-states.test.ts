/**
 * Crash-state enumeration of the queue index (as LevelDB's
 * fault_injection_test and ALICE do). A scripted, seeded workload of
 * publishes, deliveries, acks, syncs, folds and a clean stop runs on real
 * files, while every file operation is recorded: which bytes of which inode
 * an fsync made durable, which directory entries a directory fsync made
 * durable. Before each mutating operation, the disk a crash there could leave
 * is built twice:
 *
 * - "dropped": only what was fsynced (file contents as of their last fsync,
 *   directory entries as of their directory's last fsync);
 * - "torn": every current name, each file durable data plus a random prefix
 *   of what was appended since.
 *
 * Each is reopened (non-clean, and clean when it holds a clean marker) and
 * checked: the open succeeds; every message whose publish a resolved sync
 * covered is there unless an ack for it may have reached the disk; no
 * message whose ack a resolved sync covered comes back; nothing is invented;
 * and a trusted clean marker's count is what the index holds.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { JournalEntry } from '../../src/queue/journal-codec';
import { JournalFiles } from '../../src/queue/journal-files';
import { QueueIndex, consumeCleanMarker } from '../../src/queue/queue-index';
import { Recorder } from '../crash-recorder';
import { rng, rngBeside } from '../random';

const quiet = () => undefined;
// Each seed opens a store or an index a few hundred times: seconds, more on a loaded machine.
jest.setTimeout(120_000);
const SEEDS = Number(process.env.WARREN_CRASH_STATE_SEEDS ?? 4);
const BASE_SEED = Number(process.env.WARREN_CRASH_STATE_SEED ?? 1);
const id = (n: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(n + 1, 0);
  return b;
};
const entry = (seq: number): JournalEntry => ({ seq, id: id(seq), flags: 1, expiry: -1, size: 10 + seq });

interface Stamped {
  seq: number;
  /** ops done when it was issued: only operations from this one on can write it */
  issued: number;
  /** ops done when a sync covering it resolved */
  durableAt?: number;
}

async function workload(dir: string, random: () => number, rec: Recorder): Promise<{ pubs: Stamped[]; acks: Stamped[] }> {
  const pubs: Stamped[] = [];
  const acks: Stamped[] = [];
  const unsynced: Stamped[] = [];
  const { index } = await QueueIndex.open(dir, { log: quiet, segmentEntries: 8, journalEntries: 12, journalFiles: new JournalFiles(4) });
  let next = 0;
  const live: number[] = [];
  for (let step = 0; step < 70; step++) {
    const r = random();
    if (r < 0.55 || live.length === 0) {
      index.publish(entry(next));
      const p = { seq: next, issued: rec.ops };
      pubs.push(p);
      unsynced.push(p);
      live.push(next++);
    } else if (r < 0.8) {
      const s = live.splice(Math.floor(random() * live.length), 1)[0];
      index.acked([s]);
      const a = { seq: s, issued: rec.ops };
      acks.push(a);
      unsynced.push(a);
    } else if (r < 0.88) {
      index.delivered([live[Math.floor(random() * live.length)]]);
    } else {
      const covered = unsynced.splice(0);
      await index.sync();
      for (const x of covered) x.durableAt = rec.ops;
    }
  }
  const covered = unsynced.splice(0);
  await index.terminate(next);
  for (const x of covered) x.durableAt = rec.ops;
  return { pubs, acks };
}

async function check(image: string, at: number, pubs: Stamped[], acks: Stamped[], clean: boolean): Promise<void> {
  const terms = clean ? await consumeCleanMarker(image) : undefined;
  if (clean && !terms) return;
  const { index, recovery } = await QueueIndex.open(image, { log: quiet, segmentEntries: 8, journalEntries: 12, terms, journalFiles: new JournalFiles(4) });
  const got = new Set((await index.readLive(0, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER)).entries.map((e) => e.seq));
  await index.close();
  const where = `crash before op ${at} (${path.basename(image)}${clean ? ', clean marker trusted' : ''})`;
  const ackMayBeOnDisk = new Set(acks.filter((a) => a.issued < at).map((a) => a.seq));
  for (const p of pubs) {
    if (p.durableAt !== undefined && p.durableAt <= at && !ackMayBeOnDisk.has(p.seq) && !got.has(p.seq)) throw new Error(`${where}: confirmed message ${p.seq} lost`);
  }
  for (const a of acks) {
    if (a.durableAt !== undefined && a.durableAt <= at && got.has(a.seq)) throw new Error(`${where}: message ${a.seq}, whose ack was synced, came back`);
  }
  const issued = new Set(pubs.filter((p) => p.issued < at).map((p) => p.seq));
  for (const s of got) if (!issued.has(s)) throw new Error(`${where}: message ${s} was never published before the crash`);
  if (terms) expect(recovery.count).toBe(got.size);
}

describe(`crash states of the queue index (${SEEDS} seeds from ${BASE_SEED}; WARREN_CRASH_STATE_SEED replays)`, () => {
  it.each(Array.from({ length: SEEDS }, (_, i) => BASE_SEED + i))('seed %i: every crash image reopens with every confirmed message and no synced ack undone', async (seed) => {
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-cs-'));
    const dir = path.join(base, 'q');
    const scratch = path.join(base, 'images');
    const random = rng(seed);
    const rec = new Recorder(dir, scratch, rngBeside(seed));
    await rec.install();
    let result: { pubs: Stamped[]; acks: Stamped[] };
    try {
      result = await workload(dir, random, rec);
    } finally {
      rec.uninstall();
    }
    expect(rec.images.length).toBeGreaterThan(50);
    if (process.env.WARREN_CRASH_STATE_LOG) process.stdout.write(rec.log.join('\n') + '\n');
    for (const img of rec.images) {
      for (const d of [img.dropped, img.torn]) {
        // Opening changes an image (a torn tail is cut): the clean-marker check gets a copy of the original.
        const copy = `${d}-clean`;
        fs.cpSync(d, copy, { recursive: true });
        await check(d, img.at, result.pubs, result.acks, false);
        await check(copy, img.at, result.pubs, result.acks, true);
      }
    }
    fs.rmSync(base, { recursive: true, force: true });
  });
});

/**
 * The ref-count delta generator against a model: random publishes (some ids
 * shared across queues, as with fan-out), deliveries, acks and folds over
 * several queue indexes (journal and segments); the deltas must equal, per
 * id, the number of queues holding it unacked. Unlisted queues contribute
 * nothing.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QueueIndex } from '../../src/queue/queue-index';
import { indexRefDeltas } from '../../src/queue/ref-deltas';
import { rng } from '../random';

const quiet = () => undefined;

it.each([1, 2, 3, 4, 5, 6, 7, 8])('matches the model (seed %i)', async (seed) => {
  const random = rng(seed);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-deltas-'));
  try {
    const keys = Array.from({ length: 4 }, (_, i) => i.toString(16).padStart(32, '0'));
    const queues = await Promise.all(keys.map((k) => QueueIndex.open(path.join(root, k), { log: quiet, segmentEntries: 16, journalEntries: 40 })));
    const live = keys.map(() => new Map<number, string>()); // seq -> id hex, per queue
    const nextSeq = keys.map(() => 0);
    for (let step = 0; step < 600; step++) {
      const r = random();
      if (r < 0.5) {
        // publish one id to a random subset of queues (fan-out shares the id)
        const id = Buffer.alloc(16);
        id.writeUInt32BE(step, 0);
        id.writeUInt32BE(seed, 4);
        const targets = keys.map((_, i) => i).filter(() => random() < 0.5);
        for (const q of targets) {
          const seq = nextSeq[q]++;
          queues[q].index.publish({ seq, id, flags: 1, expiry: -1, size: 10 });
          live[q].set(seq, id.toString('hex'));
        }
      } else if (r < 0.65) {
        const q = Math.floor(random() * keys.length);
        const seqs = [...live[q].keys()].filter(() => random() < 0.3);
        queues[q].index.delivered(seqs);
      } else {
        const q = Math.floor(random() * keys.length);
        const seqs = [...live[q].keys()].filter(() => random() < 0.4);
        queues[q].index.acked(seqs);
        for (const s of seqs) live[q].delete(s);
      }
      if (random() < 0.05) {
        const q = Math.floor(random() * keys.length);
        await queues[q].index.foldJournal();
      }
    }
    for (const q of queues) await q.index.close();

    // Only the first three queues are still durable queues of the vhost.
    const listed = keys.slice(0, 3);
    const expected = new Map<string, number>();
    for (let q = 0; q < 3; q++) for (const hex of live[q].values()) expected.set(hex, (expected.get(hex) ?? 0) + 1);
    const got = new Map<string, number>();
    for await (const [id, delta] of indexRefDeltas(root, listed, quiet)) got.set(id.toString('hex'), (got.get(id.toString('hex')) ?? 0) + delta);
    expect(new Map([...got].sort())).toEqual(new Map([...expected].sort()));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

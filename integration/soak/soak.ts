/**
 * Soak (`npm run torture -- soak`, not part of `npm test`): mixed load on the
 * run's broker for WARREN_SOAK_MINUTES (default 30). Eight durable queues,
 * each with a publisher (persistent messages of 100 B to 8 KiB, confirms, up
 * to 200 in flight, holding back while the queue's backlog is over 5,000)
 * and a consumer. The consumers of the even queues ack at once (prefetch 50),
 * pausing now and then so backlogs grow and shrink. Those of the odd queues
 * (prefetch 1,000) ack out of order: 2% of their messages are held 5-30 s
 * before the ack and 0.5% are rejected back to the queue, so long-lived
 * records sit scattered among dead ones in the store's files, which only
 * compaction can reclaim. Every 10 s the sidecar's resident memory and open
 * descriptors are sampled, with the store's files, their bytes and the live
 * bytes in them (compaction runs while garbage is over half, so the bytes stay
 * near twice the live ones) and the hint steps waiting. At the end the
 * publishers stop, the consumers drain every queue, and the test checks that
 * every confirmed message came exactly once and intact, and that memory and
 * descriptors stayed flat. The series goes to
 * bench/results/soak-<series>.json (a shorter run to soak-<series>-<n>min.json).
 */
import * as amqp from 'amqplib';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { amqpUrl, broker, listQueues, qname, rabbitmqSeries, sleep, waitFor } from '../harness';

const FULL_MINUTES = 30;
const MINUTES = Number(process.env.WARREN_SOAK_MINUTES ?? FULL_MINUTES);
const QUEUES = 8;
const IN_FLIGHT = 200;
const MAX_BACKLOG = 5_000;

interface Sample {
  atSeconds: number;
  rssMB: number;
  fds: number;
  confirmed: number;
  consumed: number;
  compactions: number;
  /** The stores' segment files, their bytes and the live bytes in them, and hint steps waiting. */
  files: number;
  fileMB: number;
  liveMB: number;
  hintSteps: number;
}

function body(q: number, n: number): Buffer {
  const size = 100 + (crypto.createHash('sha256').update(`${q}:${n}`).digest().readUInt32BE(0) % 8092);
  const b = Buffer.alloc(size, (q * 31 + n) % 251);
  b.writeUInt32BE(q, 0);
  b.writeUInt32BE(n, 4);
  return b;
}

type StoreFigures = { compactions: number; files: number; fileBytes: number; validBytes: number; hintSteps: number };
const mb = (n: number) => Math.round(n / 1e5) / 10;

async function sidecarFigures(): Promise<Omit<Sample, 'atSeconds' | 'confirmed' | 'consumed'>> {
  const b = broker();
  const [pid] = b.sidecarPids();
  if (pid === undefined) throw new Error('no sidecar');
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
  const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
  const out = await b.ctl(['eval', 'io:format("~s", [rabbit_warren_sidecar:stats()]).']);
  const stats = JSON.parse(out.slice(0, out.lastIndexOf('}') + 1)) as { vhosts: Record<string, { store: StoreFigures }> };
  const sum = (k: keyof StoreFigures) => Object.values(stats.vhosts).reduce((a, v) => a + v.store[k], 0);
  return {
    rssMB: Math.round(rss * 10) / 10,
    fds,
    compactions: sum('compactions'),
    files: sum('files'),
    fileMB: mb(sum('fileBytes')),
    liveMB: mb(sum('validBytes')),
    hintSteps: sum('hintSteps'),
  };
}

jest.setTimeout((MINUTES + 15) * 60_000);

it(`${MINUTES} minutes of mixed load with compaction: nothing lost or duplicated, sidecar memory and descriptors flat`, async () => {
  const conn = await amqp.connect(amqpUrl());
  conn.on('error', () => undefined);
  const names = Array.from({ length: QUEUES }, (_, i) => qname(`soak${i}`));
  const confirmed = names.map(() => new Set<number>());
  const consumed = names.map(() => new Map<number, number>());
  const bad: string[] = [];
  /** Wakes a publisher holding back on its queue's backlog. */
  const consumedOne: (() => void)[] = names.map(() => () => undefined);
  let stop = false;
  let held = 0;
  let requeued = 0;
  const setup = await conn.createChannel();
  for (const q of names) await setup.assertQueue(q, { durable: true });

  const publishers = names.map(async (q, qi) => {
    const ch = await conn.createConfirmChannel();
    let n = 0;
    while (!stop) {
      // A steady load, not a race: the backlog of each queue stays under MAX_BACKLOG.
      if (confirmed[qi].size - consumed[qi].size > MAX_BACKLOG) {
        await new Promise<void>((resolve) => (consumedOne[qi] = resolve)); // the consumer's next message
        continue;
      }
      const batch: Promise<void>[] = [];
      for (let k = 0; k < IN_FLIGHT; k++, n++) {
        const id = n;
        batch.push(
          new Promise<void>((resolve) =>
            ch.sendToQueue(q, body(qi, id), { persistent: true }, (err) => {
              if (!err) confirmed[qi].add(id);
              resolve();
            }),
          ),
        );
      }
      await Promise.all(batch);
    }
    await ch.close();
  });

  const consumers = await Promise.all(
    names.map(async (q, qi) => {
      const ch = await conn.createChannel();
      const outOfOrder = qi % 2 === 1;
      await ch.prefetch(outOfOrder ? 1000 : 50);
      let paused = false;
      const { consumerTag } = await ch.consume(q, (m) => {
        if (!m) return;
        const n = m.content.readUInt32BE(4);
        if (m.content.readUInt32BE(0) !== qi || !m.content.equals(body(qi, n))) bad.push(`${q}: message ${n} damaged`);
        if (outOfOrder && !stop) {
          const r = Math.random();
          if (r < 0.005) {
            requeued++;
            ch.nack(m, false, true); // back to the queue, delivered again later
            return;
          }
          if (r < 0.025) {
            held++;
            setTimeout(() => {
              consumed[qi].set(n, (consumed[qi].get(n) ?? 0) + 1);
              consumedOne[qi]();
              ch.ack(m);
            }, 5000 + Math.random() * 25_000);
            return;
          }
        }
        consumed[qi].set(n, (consumed[qi].get(n) ?? 0) + 1);
        consumedOne[qi]();
        const ack = () => ch.ack(m);
        // Now and then a consumer stops acking for a while: its backlog grows, then drains.
        if (!paused && Math.random() < 0.0005) {
          paused = true;
          setTimeout(() => {
            paused = false;
          }, 2000 + Math.random() * 8000);
        }
        if (paused) setTimeout(ack, 3000);
        else ack();
      });
      return { ch, consumerTag };
    }),
  );

  const samples: Sample[] = [];
  const t0 = Date.now();
  const total = () => ({ confirmed: confirmed.reduce((a, s) => a + s.size, 0), consumed: consumed.reduce((a, m) => a + m.size, 0) });
  while (Date.now() - t0 < MINUTES * 60_000) {
    await sleep(10_000);
    samples.push({ atSeconds: Math.round((Date.now() - t0) / 1000), ...(await sidecarFigures()), ...total() });
    const s = samples[samples.length - 1];
    process.stdout.write(`soak ${s.atSeconds}s: sidecar ${s.rssMB} MB, ${s.fds} fds, ${s.confirmed} confirmed, ${s.consumed} consumed, ${s.compactions} compactions, ${s.files} files holding ${s.fileMB} MB (${s.liveMB} MB live), ${s.hintSteps} hint steps waiting\n`);
  }
  stop = true;
  await Promise.all(publishers);
  // Drain: every queue empty and every delivery acked.
  expect(await waitFor(async () => [...(await listQueues()).entries()].filter(([n]) => names.includes(n)).every(([, r]) => r.messages === 0), 600_000, 1000)).toBe(true);
  for (const { ch, consumerTag } of consumers) {
    await ch.cancel(consumerTag);
    await ch.close();
  }
  for (const q of names) await setup.deleteQueue(q);
  await conn.close();

  const series = rabbitmqSeries();
  const out = path.resolve(__dirname, `../../bench/results/soak-${series}${MINUTES === FULL_MINUTES ? '' : `-${MINUTES}min`}.json`);
  fs.writeFileSync(out, JSON.stringify({ bench: 'soak', rabbitmq: broker().rabbitmq.version, minutes: MINUTES, queues: QUEUES, inFlight: IN_FLIGHT, held, requeued, date: new Date().toISOString(), samples }, null, 1) + '\n');
  process.stdout.write(`soak: ${held} messages held 5-30 s before their ack, ${requeued} rejected back to their queue\n`);

  expect(bad).toEqual([]);
  for (let qi = 0; qi < QUEUES; qi++) {
    const missing = [...confirmed[qi]].filter((n) => !consumed[qi].has(n));
    const twice = [...consumed[qi]].filter(([, c]) => c > 1).map(([n]) => n);
    expect({ queue: names[qi], missing: missing.length, twice: twice.length }).toEqual({ queue: names[qi], missing: 0, twice: 0 });
    process.stdout.write(`soak ${names[qi]}: ${confirmed[qi].size} confirmed, all consumed once\n`);
  }
  // Flat: after a warm-up fifth, the last fifth's peak is within 30% (+32 MB) of the second fifth's, descriptors within 16.
  const fifth = Math.max(1, Math.floor(samples.length / 5));
  const early = samples.slice(fifth, 2 * fifth);
  const late = samples.slice(-fifth);
  const peak = (xs: Sample[], k: 'rssMB' | 'fds') => Math.max(...xs.map((x) => x[k]));
  expect(peak(late, 'rssMB')).toBeLessThanOrEqual(peak(early, 'rssMB') * 1.3 + 32);
  expect(peak(late, 'fds')).toBeLessThanOrEqual(peak(early, 'fds') + 16);
  expect(samples[samples.length - 1].compactions).toBeGreaterThan(0);
});

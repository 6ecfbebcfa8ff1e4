/**
 * What an operator sees: queue figures in rabbitmqctl, Warren named in the
 * broker log, and Warren's segment files growing under the data dir.
 */
import * as fs from 'fs';
import * as path from 'path';
import { broker, collect, connect, listQueues, qname, state, waitFor } from './harness';

/** Every Warren segment directory under the broker's data dir. */
function segmentDirs(root: string): string[] {
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 12) return;
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (e.name === 'store' && path.basename(dir) === 'warren') found.push(p);
      else walk(p, depth + 1);
    }
  };
  walk(root, 0);
  return found;
}

function segmentBytes(): number {
  let total = 0;
  for (const d of segmentDirs(state().dataDir)) {
    for (const f of fs.readdirSync(d)) {
      // The live store renames hint files (<n>.rdh.tmp) and deletes files
      // between the listing and the stat: such an entry no longer counts.
      const st = fs.statSync(path.join(d, f), { throwIfNoEntry: false });
      if (st?.isFile()) total += st.size;
    }
  }
  return total;
}

it('the broker log shows that Warren backs the queues', async () => {
  const b = broker();
  const log = fs.readFileSync(b.logFile, 'utf8');
  expect(log).toMatch(/Warren: backing queue rabbit_warren_bq active/);
  expect(log).toMatch(/warren: .*sidecar \d+ listening/);
  // The queues' backing module, as RabbitMQ itself reports it.
  const bq = await b.ctl(['eval', 'application:get_env(rabbitmq_priority_queue, backing_queue_module).']);
  expect(bq.trim()).toBe('{ok,rabbit_warren_bq}');
});

it("Warren's segment files grow as persistent messages are published", async () => {
  const q = qname('segments');
  const conn = await connect();
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(q, { durable: true });
  const before = segmentBytes();
  const payload = Buffer.alloc(4096, 7);
  for (let i = 0; i < 500; i++) ch.sendToQueue(q, payload, { persistent: true });
  await ch.waitForConfirms();
  const after = segmentBytes();
  expect(segmentDirs(state().dataDir).length).toBeGreaterThan(0);
  // Confirmed means fsynced into the segment files: at least the bodies are there.
  expect(after - before).toBeGreaterThanOrEqual(500 * 4096);
  await ch.deleteQueue(q);
  await conn.close();
});

it('rabbitmqctl list_queues shows ready and unacknowledged figures while messages are held', async () => {
  const q = qname('figures');
  const conn = await connect();
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(q, { durable: true });
  for (let i = 0; i < 50; i++) ch.sendToQueue(q, Buffer.from(`m${i}`), { persistent: i % 2 === 0 });
  await ch.waitForConfirms();
  expect((await listQueues()).get(q)).toEqual({ name: q, messages: 50, ready: 50, unacked: 0 });
  const c = await conn.createChannel();
  const held = await collect(c, q, 20);
  expect((await listQueues()).get(q)).toEqual({ name: q, messages: 50, ready: 30, unacked: 20 });
  held.slice(0, 5).forEach((m) => c.ack(m));
  await c.close(); // the other 15 go back to the queue
  expect(await waitFor(async () => (await listQueues()).get(q)?.ready === 45)).toBe(true);
  expect((await listQueues()).get(q)).toEqual({ name: q, messages: 45, ready: 45, unacked: 0 });
  const bytes = await broker().ctl(['list_queues', '-q', '--no-table-headers', 'name', 'message_bytes_ready', 'messages_persistent']);
  const row = bytes.split('\n').find((l) => l.startsWith(q + '\t'));
  // 45 left: m5..m49; bodies "mN" are 2 or 3 bytes; persistent = even N.
  const left = Array.from({ length: 45 }, (_, i) => i + 5);
  const readyBytes = left.reduce((n, i) => n + `m${i}`.length, 0);
  expect(row?.split('\t').slice(1).map(Number)).toEqual([readyBytes, left.filter((i) => i % 2 === 0).length]);
  await ch.deleteQueue(q);
  await conn.close();
});

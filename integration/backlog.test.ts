/**
 * A backlog far beyond the queue's in-memory windows (the test broker runs
 * with --queue-window 512): 50,000 small persistent messages published with
 * confirms into a durable queue stay mostly in its index; the sidecar holds a
 * bounded number of them in memory. After a clean restart every message comes
 * back, in order, with the right redelivered flags and list_queues figures.
 * Transient messages beyond the windows have their bodies paged out to the
 * vhost's transient store, and come back from it. The deliveries and acks
 * the plugin batches reach the sidecar once a queue goes idle.
 */
import * as amqp from 'amqplib';
import { broker, cleanRestart, connect, listQueues, qname, waitFor } from './harness';

const N = 50_000;
const ACKED = 2_000;
const HELD = 300; // delivered and left unacked at the stop
const WINDOW = 512;

interface QueueStats {
  len: number;
  unacked: number;
  persistentCount: number;
  memory: { messages: number; pendingAcks: number; deltaCount: number; journalEntries: number; pagedTransient: number };
}

interface VhostStats {
  queues: Record<string, QueueStats>;
  transientStore: { messages: number };
}

async function vhostStats(): Promise<VhostStats> {
  const out = await broker().ctl(['eval', 'io:format("~s", [rabbit_warren_sidecar:stats()]).']);
  const stats = JSON.parse(out.slice(0, out.lastIndexOf('}') + 1)) as { vhosts: Record<string, VhostStats> };
  return stats.vhosts['/'];
}

async function queueStats(name: string): Promise<QueueStats | undefined> {
  return Object.entries((await vhostStats()).queues).find(([k]) => k.includes(name))?.[1];
}

/**
 * Consumes and acks messages `from` … `to` − 1 (numbered by messageId) and
 * returns what was wrong: order, bodies, and whatever `check` finds.
 */
async function consumeInOrder(
  c: amqp.Channel,
  q: string,
  from: number,
  to: number,
  bodyOf: (i: number) => Buffer,
  check: (i: number, m: amqp.ConsumeMessage) => string | undefined = () => undefined,
): Promise<string[]> {
  await c.prefetch(1000);
  let next = from;
  const bad: string[] = [];
  await new Promise<void>((resolve) => {
    void c.consume(q, (m) => {
      if (!m) return;
      const i = Number(m.properties.messageId);
      if (i !== next) bad.push(`expected ${next}, got ${i}`);
      if (!m.content.equals(bodyOf(i))) bad.push(`body of ${i}`);
      const wrong = check(i, m);
      if (wrong) bad.push(wrong);
      next = i + 1;
      c.ack(m);
      if (next === to) resolve();
    });
  });
  return bad;
}

/** Publishes messages 0 … n − 1 (messageId i), waiting for confirms every 2,000 and at the end. */
async function publishConfirmed(ch: amqp.ConfirmChannel, q: string, n: number, bodyOf: (i: number) => Buffer, persistent: boolean): Promise<void> {
  for (let i = 0; i < n; i++) {
    ch.sendToQueue(q, bodyOf(i), { persistent, messageId: String(i) });
    if (i % 2000 === 1999) await ch.waitForConfirms();
  }
  await ch.waitForConfirms();
}

function body(i: number): Buffer {
  return Buffer.from(`backlog:${i}:${'y'.repeat(i % 40)}`);
}

it('a 50,000-message backlog lives in the index, survives a clean restart and comes back in order', async () => {
  const q = qname('backlog');
  let conn = await connect();
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(q, { durable: true });
  await publishConfirmed(ch, q, N, body, true);

  // Take ACKED + HELD (prefetch stops the rest), then ack the first ACKED.
  const consumer = await conn.createChannel();
  await consumer.prefetch(ACKED + HELD);
  const got: amqp.ConsumeMessage[] = [];
  let tag = '';
  await new Promise<void>((resolve) => {
    void consumer
      .consume(q, (m) => {
        if (!m) return;
        got.push(m);
        if (got.length === ACKED + HELD) resolve();
      })
      .then((ok) => (tag = ok.consumerTag));
  });
  await consumer.cancel(tag);
  for (const m of got.slice(0, ACKED)) consumer.ack(m);
  expect(got.map((m) => Number(m.properties.messageId))).toEqual(Array.from({ length: ACKED + HELD }, (_, i) => i));
  const rows = await waitFor(async () => {
    const r = (await listQueues()).get(q);
    return r && r.unacked === HELD ? r : undefined;
  });
  expect(rows).toMatchObject({ messages: N - ACKED, ready: N - ACKED - HELD, unacked: HELD });

  // Bounded memory: at most the two windows plus the pending acks are held.
  const st = await queueStats(q);
  expect(st).toBeDefined();
  // Pending acks in the sidecar: the HELD deliveries, plus what the plugin's
  // read-ahead reserved (ready to RabbitMQ; at most read_ahead = 64).
  expect(st!.memory.pendingAcks).toBeGreaterThanOrEqual(HELD);
  expect(st!.memory.pendingAcks).toBeLessThanOrEqual(HELD + 64);
  expect(st!.memory.messages).toBeLessThanOrEqual(2 * WINDOW + st!.memory.pendingAcks);
  expect(st!.memory.deltaCount).toBeGreaterThan(N - ACKED - HELD - 2 * WINDOW);
  expect(st!.persistentCount).toBe(N - ACKED);

  // Stop the broker while the channel still holds the unacked deliveries.
  conn = await cleanRestart(conn);
  try {
    const after = (await listQueues()).get(q);
    expect(after).toMatchObject({ messages: N - ACKED, ready: N - ACKED, unacked: 0 });
    const st2 = await queueStats(q);
    expect(st2!.memory.messages).toBeLessThanOrEqual(2 * WINDOW);
    const c = await conn.createChannel();
    const bad = await consumeInOrder(c, q, ACKED, N, body, (i, m) =>
      m.fields.redelivered !== i < ACKED + HELD ? `redelivered of ${i}: ${m.fields.redelivered}` : undefined,
    );
    expect(bad.slice(0, 10)).toEqual([]);
    expect(await c.get(q)).toBe(false);
    const end = await waitFor(async () => {
      const r = (await listQueues()).get(q);
      return r && r.messages === 0 ? r : undefined;
    });
    expect(end).toMatchObject({ messages: 0, ready: 0, unacked: 0 });
    await c.deleteQueue(q);
    await c.close();
  } finally {
    await conn.close();
  }
}, 300_000);

it('bodies of 20,000 transient messages beyond the windows are paged out to the transient store and come back in order', async () => {
  const q = qname('transient-backlog');
  const M = 20_000;
  const tbody = (i: number) => Buffer.concat([Buffer.from(`transient:${i}:`), Buffer.alloc(1024, i % 251)]);
  const conn = await connect();
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(q, { durable: false });
    await publishConfirmed(ch, q, M, tbody, false);
    const st = await queueStats(q);
    expect(st!.len).toBe(M);
    // all but the windows are paged; their bodies are in the transient store
    expect(st!.memory.pagedTransient).toBeGreaterThanOrEqual(M - 2 * WINDOW - 1);
    expect((await vhostStats()).transientStore.messages).toBeGreaterThanOrEqual(st!.memory.pagedTransient);

    const c = await conn.createChannel();
    const bad = await consumeInOrder(c, q, 0, M, tbody);
    expect(bad.slice(0, 10)).toEqual([]);
    // every paged body released once consumed
    const end = await waitFor(async () => {
      const v = await vhostStats();
      return v.transientStore.messages === 0 ? v : undefined;
    });
    expect(end).toBeDefined();
    expect(Object.entries(end!.queues).find(([k]) => k.includes(q))?.[1].memory.pagedTransient).toBe(0);
    await c.deleteQueue(q);
  } finally {
    await conn.close();
  }
}, 300_000);

it('deliveries and acks the plugin batches reach the sidecar once the queue is idle', async () => {
  const q = qname('idle-acks');
  const conn = await connect();
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(q, { durable: true });
    const M = 500;
    await publishConfirmed(ch, q, M, body, true);
    const c = await conn.createChannel();
    await c.prefetch(100);
    let got = 0;
    await new Promise<void>((resolve) => {
      void c.consume(q, (m) => {
        if (!m) return;
        c.ack(m);
        if (++got === M) resolve();
      });
    });
    // Nothing else happens on the queue: only its idle flush can tell the
    // sidecar about the last acks.
    const st = await waitFor(async () => {
      const s = await queueStats(q);
      return s && s.persistentCount === 0 && s.memory.pendingAcks === 0 ? s : undefined;
    }, 10_000);
    expect(st).toMatchObject({ len: 0, unacked: 0, persistentCount: 0 });
    await c.deleteQueue(q);
  } finally {
    await conn.close();
  }
});

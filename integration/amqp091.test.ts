/**
 * AMQP 0-9-1 (amqplib) against the real broker with Warren as the backing queue.
 */
import * as amqp from 'amqplib';
import { collect, connect, drainBodies, listQueues, qname, sleep, waitFor } from './harness';

let conn: amqp.ChannelModel;

beforeAll(async () => {
  conn = await connect();
});

afterAll(async () => {
  await conn?.close();
});

function body(i: number, size = 64): Buffer {
  const head = `msg-${i}-`;
  return Buffer.concat([Buffer.from(head), Buffer.alloc(Math.max(0, size - head.length), i % 251)]);
}

describe('durable queue with publisher confirms', () => {
  it('confirms 10,000 persistent messages, then delivers each exactly once in order with prefetch and acks', async () => {
    const q = qname('confirm10k');
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(q, { durable: true });
    const N = 10_000;
    let confirmed = 0;
    const acks: Promise<void>[] = [];
    for (let i = 0; i < N; i++) {
      acks.push(
        new Promise((resolve, reject) => {
          ch.sendToQueue(q, body(i, 100 + (i % 900)), { persistent: true, messageId: String(i) }, (err) => {
            if (err) reject(err instanceof Error ? err : new Error(String(err)));
            else {
              confirmed++;
              resolve();
            }
          });
        }),
      );
    }
    await Promise.all(acks);
    expect(confirmed).toBe(N);
    const rows = await listQueues();
    expect(rows.get(q)).toMatchObject({ messages: N, ready: N, unacked: 0 });

    const cch = await conn.createChannel();
    await cch.prefetch(200);
    const seen: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${seen.length} delivered`)), 120_000);
      void cch.consume(q, (m) => {
        if (!m) return;
        const i = Number(m.properties.messageId);
        expect(m.content.equals(body(i, 100 + (i % 900)))).toBe(true);
        expect(m.fields.redelivered).toBe(false);
        seen.push(i);
        cch.ack(m);
        if (seen.length === N) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    expect(seen).toEqual(Array.from({ length: N }, (_, i) => i));
    const after = await waitFor(async () => (await listQueues()).get(q)?.messages === 0);
    expect(after).toBe(true);
    await cch.close();
    await ch.deleteQueue(q);
    await ch.close();
  });
});

describe('delivery semantics', () => {
  let ch: amqp.ConfirmChannel;
  beforeEach(async () => {
    ch = await conn.createConfirmChannel();
  });
  afterEach(async () => {
    await ch.close().catch(() => undefined);
  });

  async function publish(q: string, n: number, opts: amqp.Options.Publish = { persistent: true }): Promise<void> {
    for (let i = 0; i < n; i++) ch.sendToQueue(q, body(i), { ...opts, messageId: String(i) });
    await ch.waitForConfirms();
  }

  it('nack with requeue gives the message again, with redelivered set, at the head', async () => {
    const q = qname('nack');
    await ch.assertQueue(q, { durable: true });
    await publish(q, 3);
    const c = await conn.createChannel();
    await c.prefetch(1);
    const first = await collect(c, q, 1);
    expect(first[0].properties.messageId).toBe('0');
    expect(first[0].fields.redelivered).toBe(false);
    c.nack(first[0], false, true);
    const again = await collect(c, q, 1);
    expect(again[0].properties.messageId).toBe('0');
    expect(again[0].fields.redelivered).toBe(true);
    expect(again[0].content.equals(body(0))).toBe(true);
    c.ack(again[0]);
    await c.close();
    // Closing the channel requeued nothing else: two left, never delivered.
    const rest = await conn.createChannel();
    const m1 = await rest.get(q, { noAck: true });
    const m2 = await rest.get(q, { noAck: true });
    expect(m1 && [m1.properties.messageId, m1.fields.redelivered]).toEqual(['1', false]);
    expect(m2 && [m2.properties.messageId, m2.fields.redelivered]).toEqual(['2', false]);
    expect(await rest.get(q)).toBe(false);
    await rest.deleteQueue(q);
    await rest.close();
  });

  it('basic.get returns messages in order, message_count, and false when empty', async () => {
    const q = qname('get');
    await ch.assertQueue(q, { durable: true });
    await publish(q, 5);
    const c = await conn.createChannel();
    const got = [];
    for (let i = 0; i < 5; i++) {
      const m = await c.get(q, { noAck: false });
      if (!m) throw new Error('expected a message');
      expect(m.fields.messageCount).toBe(4 - i);
      expect(m.content.equals(body(i))).toBe(true);
      got.push(m);
    }
    expect(await c.get(q)).toBe(false);
    expect((await listQueues()).get(q)).toMatchObject({ messages: 5, ready: 0, unacked: 5 });
    // Channel close requeues the unacked messages, redelivered.
    await c.close();
    const c2 = await conn.createChannel();
    const back = await c2.get(q, { noAck: true });
    expect(back && [back.properties.messageId, back.fields.redelivered]).toEqual(['0', true]);
    await c2.deleteQueue(q);
    await c2.close();
  });

  it('purge removes ready messages and reports their count', async () => {
    const q = qname('purge');
    await ch.assertQueue(q, { durable: true });
    await publish(q, 25);
    await publish(q, 5, { persistent: false });
    const r = await ch.purgeQueue(q);
    expect(r.messageCount).toBe(30);
    expect((await listQueues()).get(q)).toMatchObject({ messages: 0 });
    await publish(q, 2);
    const c = await conn.createChannel();
    const m = await c.get(q, { noAck: true });
    expect(m && m.properties.messageId).toBe('0');
    await c.deleteQueue(q);
    await c.close();
  });

  it('delete removes the queue and reports its message count', async () => {
    const q = qname('delete');
    await ch.assertQueue(q, { durable: true });
    await publish(q, 12);
    const r = await ch.deleteQueue(q);
    expect(r.messageCount).toBe(12);
    expect((await listQueues()).has(q)).toBe(false);
    // Declaring it again starts empty.
    await ch.assertQueue(q, { durable: true });
    expect((await ch.checkQueue(q)).messageCount).toBe(0);
    await ch.deleteQueue(q);
  });

  it('per-message TTL expires messages', async () => {
    const q = qname('ttl-msg');
    await ch.assertQueue(q, { durable: true });
    ch.sendToQueue(q, Buffer.from('short'), { persistent: true, expiration: '200' });
    ch.sendToQueue(q, Buffer.from('long'), { persistent: true, expiration: '600000' });
    await ch.waitForConfirms();
    await sleep(400);
    const c = await conn.createChannel();
    const m = await c.get(q, { noAck: true });
    expect(m && m.content.toString()).toBe('long');
    expect(await c.get(q)).toBe(false);
    await c.deleteQueue(q);
    await c.close();
  });

  it('per-queue TTL expires messages, and dead-letters them when asked', async () => {
    const dlq = qname('ttl-dlq');
    const q = qname('ttl-queue');
    await ch.assertQueue(dlq, { durable: true });
    await ch.assertQueue(q, { durable: true, arguments: { 'x-message-ttl': 300, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': dlq } });
    await publish(q, 10);
    const expired = await waitFor(async () => {
      const rows = await listQueues();
      return rows.get(q)?.messages === 0 && rows.get(dlq)?.messages === 10;
    }, 20_000);
    expect(expired).toBe(true);
    const c = await conn.createChannel();
    const dead = await collect(c, dlq, 10);
    expect(dead.map((m) => m.properties.messageId)).toEqual(Array.from({ length: 10 }, (_, i) => String(i)));
    expect(dead.every((m, i) => m.content.equals(body(i)))).toBe(true);
    c.ackAll();
    await c.deleteQueue(q);
    await c.deleteQueue(dlq);
    await c.close();
  });

  it('a queue with x-max-priority delivers by priority', async () => {
    const q = qname('prio');
    await ch.assertQueue(q, { durable: true, arguments: { 'x-max-priority': 5 } });
    const prios = [0, 3, 1, 5, 2, 5, 0, 4];
    prios.forEach((p, i) => ch.sendToQueue(q, Buffer.from(`p${p}-${i}`), { persistent: true, priority: p }));
    await ch.waitForConfirms();
    expect((await listQueues()).get(q)).toMatchObject({ messages: prios.length });
    const c = await conn.createChannel();
    expect(await drainBodies(c, q)).toEqual(['p5-3', 'p5-5', 'p4-7', 'p3-1', 'p2-4', 'p1-2', 'p0-0', 'p0-6']);
    await c.deleteQueue(q);
    await c.close();
  });

  it('a fan-out exchange delivers every message to each of three durable queues', async () => {
    const ex = qname('fanout');
    const qs = [qname('fan-a'), qname('fan-b'), qname('fan-c')];
    await ch.assertExchange(ex, 'fanout', { durable: true });
    for (const q of qs) {
      await ch.assertQueue(q, { durable: true });
      await ch.bindQueue(q, ex, '');
    }
    const N = 200;
    for (let i = 0; i < N; i++) ch.publish(ex, '', body(i, 300), { persistent: true, messageId: String(i) });
    await ch.waitForConfirms();
    const rows = await listQueues();
    for (const q of qs) expect(rows.get(q)).toMatchObject({ messages: N });
    const c = await conn.createChannel();
    for (const q of qs) {
      const got = await collect(c, q, N);
      expect(got.map((m) => Number(m.properties.messageId))).toEqual(Array.from({ length: N }, (_, i) => i));
      expect(got.every((m) => m.content.equals(body(Number(m.properties.messageId), 300)))).toBe(true);
      got.forEach((m) => c.ack(m));
    }
    for (const q of qs) await c.deleteQueue(q);
    await c.deleteExchange(ex);
    await c.close();
  });

  it('transient messages on a durable queue and everything on a non-durable queue work in memory', async () => {
    const durable = qname('mixed');
    const temp = qname('temp');
    await ch.assertQueue(durable, { durable: true });
    await ch.assertQueue(temp, { durable: false, autoDelete: false });
    await publish(durable, 3, { persistent: false });
    await publish(temp, 3, { persistent: true });
    const c = await conn.createChannel();
    for (const q of [durable, temp]) {
      const got = await collect(c, q, 3);
      expect(got.map((m) => m.content.equals(body(Number(m.properties.messageId))))).toEqual([true, true, true]);
      got.forEach((m) => c.ack(m));
      await c.deleteQueue(q);
    }
    await c.close();
  });
});

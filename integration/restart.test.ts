/**
 * A clean broker stop with unacked persistent messages, some delivered: after
 * the restart every persistent message is back exactly once per queue with the
 * right redelivered flag; transient messages are gone.
 */
import * as amqp from 'amqplib';
import { cleanRestart, collect, connect, listQueues, qname } from './harness';

function body(q: string, i: number): Buffer {
  return Buffer.from(`${q}:${i}:${'x'.repeat(i % 500)}`);
}

it('brings back every unacked persistent message after a clean restart, exactly once, with redelivered flags', async () => {
  const ex = qname('restart-fan');
  const qs = [qname('restart-a'), qname('restart-b')];
  const solo = qname('restart-solo');
  const N = 300;
  const DELIVERED = 40; // delivered and left unacked at the stop
  const ACKED = 25; // delivered and acked before the stop

  let conn = await connect();
  const ch = await conn.createConfirmChannel();
  await ch.assertExchange(ex, 'fanout', { durable: true });
  for (const q of qs) {
    await ch.assertQueue(q, { durable: true });
    await ch.bindQueue(q, ex, '');
  }
  await ch.assertQueue(solo, { durable: true });
  for (let i = 0; i < N; i++) {
    ch.publish(ex, '', body(ex, i), { persistent: true, messageId: String(i) });
    ch.sendToQueue(solo, body(solo, i), { persistent: true, messageId: String(i) });
  }
  // Transient messages on the same durable queues: gone after the restart.
  for (let i = 0; i < 50; i++) {
    ch.publish(ex, '', Buffer.from('transient'), { persistent: false, messageId: `t${i}` });
    ch.sendToQueue(solo, Buffer.from('transient'), { persistent: false, messageId: `t${i}` });
  }
  await ch.waitForConfirms();

  // On each queue: ack the first ACKED, keep the next DELIVERED unacked.
  const consumer = await conn.createChannel();
  for (const q of [...qs, solo]) {
    const got = await collect(consumer, q, ACKED + DELIVERED);
    got.slice(0, ACKED).forEach((m) => consumer.ack(m));
  }
  const rows = await listQueues();
  for (const q of [...qs, solo]) {
    expect(rows.get(q)).toMatchObject({ messages: N + 50 - ACKED, unacked: DELIVERED, ready: N + 50 - ACKED - DELIVERED });
  }

  // Stop the broker while the channel still holds the unacked deliveries.
  conn = await cleanRestart(conn);
  try {
    const after = await listQueues();
    for (const q of [...qs, solo]) expect(after.get(q)).toMatchObject({ messages: N - ACKED, ready: N - ACKED, unacked: 0 });
    const c = await conn.createChannel();
    for (const q of [...qs, solo]) {
      const src = q === solo ? solo : ex;
      const got = await collect(c, q, N - ACKED);
      const ids = got.map((m) => Number(m.properties.messageId));
      expect(ids).toEqual(Array.from({ length: N - ACKED }, (_, i) => i + ACKED));
      for (const m of got) {
        const i = Number(m.properties.messageId);
        expect(m.content.equals(body(src, i))).toBe(true);
        expect(m.properties.deliveryMode).toBe(2);
        expect(m.fields.redelivered).toBe(i < ACKED + DELIVERED);
      }
      got.forEach((m) => c.ack(m));
      // Exactly once: nothing else is left.
      expect(await c.get(q)).toBe(false);
    }
    for (const q of [...qs, solo]) await c.deleteQueue(q);
    await c.deleteExchange(ex);
    await c.close();
  } finally {
    await conn.close();
  }
});

it('a queue declared after the restart works, and a restart with no messages is clean', async () => {
  const q = qname('post-restart');
  const conn: amqp.ChannelModel = await connect();
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(q, { durable: true });
  ch.sendToQueue(q, Buffer.from('after'), { persistent: true });
  await ch.waitForConfirms();
  const m = await ch.get(q, { noAck: true });
  expect(m && m.content.toString()).toBe('after');
  await ch.deleteQueue(q);
  await conn.close();
});

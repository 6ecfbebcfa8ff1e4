/**
 * What differs between the supported brokers, stated per version rather than
 * skipped: x-queue-version (1 and 2 on 3.10 and 4.0, only 2 on 4.3) and
 * classic queue mirroring (3.10 only). Whatever the broker accepts, Warren
 * stores: the queue gets its own directory under Warren's and keeps its
 * messages across a clean restart.
 */
import * as amqp from 'amqplib';
import * as fs from 'fs';
import * as path from 'path';
import { broker, cleanRestart, connect, drainBodies, listQueues, qname, rabbitmqSeries } from './harness';

function warrenQueueDirs(): number {
  const dir = path.join(broker().warrenDir('/'), 'queues');
  return fs.existsSync(dir) ? fs.readdirSync(dir).length : 0;
}

async function publishConfirmed(conn: amqp.ChannelModel, q: string, n: number): Promise<void> {
  const ch = await conn.createConfirmChannel();
  for (let i = 0; i < n; i++) ch.sendToQueue(q, Buffer.from(`${q}-${i}`), { persistent: true });
  await ch.waitForConfirms();
  await ch.close();
}

/** Declares `q` with `args` on a channel of its own: 'ok', or the broker's refusal. */
async function declare(conn: amqp.ChannelModel, q: string, args: Record<string, unknown>): Promise<string> {
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  try {
    await ch.assertQueue(q, { durable: true, arguments: args });
    await ch.close();
    return 'ok';
  } catch (e) {
    return (e as Error).message;
  }
}

it('x-queue-version: the versions the broker accepts all live in Warren (3.10 and 4.0 accept 1 and 2, 4.3 only 2)', async () => {
  let conn = await connect();
  const v1 = qname('qv1');
  const v2 = qname('qv2');
  const dirs = warrenQueueDirs();
  const r1 = await declare(conn, v1, { 'x-queue-version': 1 });
  const r2 = await declare(conn, v2, { 'x-queue-version': 2 });
  if (rabbitmqSeries() === '4.3') expect(r1).toMatch(/PRECONDITION_FAILED.*unsupported queue version '1'/);
  else expect(r1).toBe('ok');
  expect(r2).toBe('ok');
  const accepted = [v1, v2].filter((_, i) => [r1, r2][i] === 'ok');
  for (const q of accepted) await publishConfirmed(conn, q, 20);
  expect(warrenQueueDirs()).toBe(dirs + accepted.length);
  conn = await cleanRestart(conn);
  const rows = await listQueues();
  for (const q of accepted) expect(rows.get(q)?.messages).toBe(20);
  const ch = await conn.createChannel();
  for (const q of accepted) await ch.deleteQueue(q);
  await conn.close();
});

it('classic queue mirroring: on 3.10 a mirrored queue keeps its messages in Warren; 4.x refuses the policy', async () => {
  const b = broker();
  const q = qname('mirrored');
  const policy = ['set_policy', '--apply-to', 'queues', `warren-ha-${process.pid}`, `^${q}$`, '{"ha-mode":"all"}'];
  if (rabbitmqSeries() !== '3.10') {
    await expect(b.ctl(policy)).rejects.toThrow(/\[\{<<"ha-mode">>,<<"all">>\}\] are not recognised policy settings/);
    return;
  }
  await b.ctl(policy);
  let conn = await connect();
  const dirs = warrenQueueDirs();
  expect(await declare(conn, q, {})).toBe('ok');
  await publishConfirmed(conn, q, 50);
  expect(warrenQueueDirs()).toBe(dirs + 1);
  // On one node the queue has no mirrors, but runs under RabbitMQ's mirror master, which drives Warren.
  const out = await b.ctl(['list_queues', '-q', '--no-table-headers', 'name', 'policy', 'messages']);
  expect(out).toContain(`${q}\twarren-ha-${process.pid}\t50`);
  conn = await cleanRestart(conn);
  const ch = await conn.createChannel();
  expect(await drainBodies(ch, q)).toEqual(Array.from({ length: 50 }, (_, i) => `${q}-${i}`));
  await ch.deleteQueue(q);
  await conn.close();
  await b.ctl(['clear_policy', `warren-ha-${process.pid}`]);
});

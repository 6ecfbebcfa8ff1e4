/**
 * The application examples (examples/), each doing what its README says
 * against a real broker: the work queue (every task processed and acked
 * exactly once, never more than the prefetch in a worker's hand), the
 * fan-out (every subscriber gets every event), the AMQP 1.0 sender and
 * receiver (bodies round-trip, durable, on the address form of this broker's
 * version), their command lines (node dist/examples/…, what the npm scripts
 * run), and the
 * crash demo, which runs a broker of its own with `warren start` on this
 * run's series, kills it with SIGKILL and gets every confirmed message back.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { amqp10Demo, openConnection, queueAddress, receiveAndAccept, serverVersion } from '../examples/amqp10';
import { declareSubscribers, pubSubDemo, publishEvents, subscribe, subscriberQueue } from '../examples/pubsub';
import { surviveCrash } from '../examples/survive-crash';
import { publishTasks, workQueueDemo } from '../examples/work-queue';
import { amqpUrl, broker, connect, listQueues, qname, rabbitmqSeries, waitFor } from './harness';

jest.setTimeout(180_000);

const EXAMPLES = path.resolve(__dirname, '..', 'dist', 'examples');

/** Resolves once every queue named holds no message (ready or unacked). */
async function emptied(queues: string[]): Promise<boolean> {
  return waitFor(async () => {
    const rows = await listQueues();
    return queues.every((q) => rows.get(q)?.messages === 0);
  });
}

async function deleteQueues(queues: string[], exchange?: string): Promise<void> {
  const conn = await connect();
  const ch = await conn.createChannel();
  for (const q of queues) await ch.deleteQueue(q);
  if (exchange) await ch.deleteExchange(exchange);
  await conn.close();
}

describe('work queue (amqplib)', () => {
  it('has every task processed and acked exactly once across three workers, with at most the prefetch in hand', async () => {
    const queue = qname('ex-tasks');
    const r = await workQueueDemo(amqpUrl(), { queue, tasks: 300, workers: 3, prefetch: 10, workMs: 1 });
    try {
      expect(r.confirmed).toBe(300);
      expect(r.earlier).toBe(0);
      const processed = r.processedBy.flat();
      expect(processed).toHaveLength(300);
      expect(new Set(processed).size).toBe(300);
      expect([...processed].sort()).toEqual([...r.tasks].sort());
      expect(r.processedBy.every((p) => p.length > 0)).toBe(true); // shared out, not one worker taking all
      expect(Math.max(...r.maxInHand)).toBeLessThanOrEqual(10);
      expect(await emptied([queue])).toBe(true);
    } finally {
      await deleteQueues([queue]);
    }
  });
});

describe('publish/subscribe (amqplib)', () => {
  it('gives every subscriber every event, in order, and leaves their queues empty', async () => {
    const exchange = qname('ex-events');
    const subscribers = ['billing', 'audit', 'email'];
    const r = await pubSubDemo(amqpUrl(), { exchange, subscribers, events: 50 });
    const queues = subscribers.map((s) => subscriberQueue(exchange, s));
    try {
      expect(r.confirmed).toBe(50);
      expect(r.earlier).toBe(0);
      expect(Object.keys(r.received).sort()).toEqual([...subscribers].sort());
      for (const s of subscribers) expect(r.received[s]).toEqual(r.events);
      expect(await emptied(queues)).toBe(true);
    } finally {
      await deleteQueues(queues, exchange);
    }
  });

  it('keeps the events published while the subscribers are away in their durable queues', async () => {
    const exchange = qname('ex-away');
    const queues = await declareSubscribers(amqpUrl(), exchange, ['a', 'b']);
    try {
      const events = Array.from({ length: 40 }, (_, i) => `away ${i}`);
      expect(await publishEvents(amqpUrl(), exchange, events)).toBe(40);
      // confirmed: in every subscriber's queue, none consumed yet
      expect(await waitFor(async () => { const rows = await listQueues(); return queues.every((q) => rows.get(q)?.messages === 40); })).toBe(true);
      for (const q of queues) {
        const got: string[] = [];
        let done: () => void = () => undefined;
        const all = new Promise<void>((resolve) => (done = resolve));
        const sub = await subscribe(amqpUrl(), q, (e) => {
          got.push(e);
          if (got.length === events.length) done();
        });
        await all;
        await sub.stop();
        expect(got).toEqual(events);
        expect(sub.received).toBe(40);
      }
      expect(await emptied(queues)).toBe(true);
    } finally {
      await deleteQueues(queues, exchange);
    }
  });
});

describe('AMQP 1.0 (rhea)', () => {
  const series = rabbitmqSeries();

  it(`sends durable messages and receives them back, accepted, on the address form of RabbitMQ ${series}`, async () => {
    const queue = qname('ex-amqp10');
    const r = await amqp10Demo(amqpUrl(), { queue, count: 25 });
    try {
      expect(r.version?.startsWith(`${series}.`)).toBe(true);
      expect(r.address).toBe(series === '3.10' ? `/amq/queue/${queue}` : `/queues/${queue}`);
      expect(r.accepted).toBe(25);
      expect(r.earlier).toBe(0);
      expect(r.received.map((m) => m.body)).toEqual(r.sent);
      expect(r.received.every((m) => m.durable)).toBe(true);
      expect(await emptied([queue])).toBe(true);
    } finally {
      await deleteQueues([queue]);
    }
  });

  it('receives over AMQP 1.0 what a work-queue producer published over AMQP 0-9-1', async () => {
    const queue = qname('ex-bridge');
    const bodies = Array.from({ length: 10 }, (_, i) => `from 0-9-1 #${i}`);
    expect(await publishTasks(amqpUrl(), queue, bodies)).toBe(10);
    const conn = await openConnection(amqpUrl());
    try {
      const got = await receiveAndAccept(conn, queueAddress(queue, serverVersion(conn)!), 10);
      expect(got.map((m) => m.body)).toEqual(bodies);
      expect(got.every((m) => m.durable)).toBe(true);
      expect(await emptied([queue])).toBe(true);
    } finally {
      conn.close();
      await deleteQueues([queue]);
    }
  });
});

describe('the examples as commands', () => {
  function run(script: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [path.join(EXAMPLES, script), ...args], { env: { ...process.env, AMQP_URL: amqpUrl() }, timeout: 120_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
      });
    });
  }

  it('work-queue, pubsub and amqp10 run their demos to success (node dist/examples/…, AMQP_URL)', async () => {
    const tasks = qname('ex-cli-tasks');
    const events = qname('ex-cli-events');
    const amqp10q = qname('ex-cli-amqp10');
    try {
      const wq = await run('work-queue.js', ['--queue', tasks, '--tasks', '40']);
      expect(wq.stderr).toBe('');
      expect(wq.code).toBe(0);
      expect(wq.stdout).toContain('the broker confirmed 40');
      expect(wq.stdout).toContain('all 40 tasks processed and acked, each exactly once');

      const ps = await run('pubsub.js', ['--exchange', events, 'demo', '--events', '15', '--subscribers', 'x,y']);
      expect(ps.stderr).toBe('');
      expect(ps.code).toBe(0);
      expect(ps.stdout).toContain("subscriber 'x' received 15 of 15 events");
      expect(ps.stdout).toContain("subscriber 'y' received 15 of 15 events");
      expect(ps.stdout).toContain('every subscriber received every event');

      const a = await run('amqp10.js', ['--queue', amqp10q, '--count', '12']);
      expect(a.stderr).toBe('');
      expect(a.code).toBe(0);
      expect(a.stdout).toContain(`connected to RabbitMQ ${rabbitmqSeries()}.`);
      expect(a.stdout).toContain('all 12 messages came back, durable, in order');

      // the separate publish / consume commands, with the queue in between
      expect((await run('amqp10.js', ['--queue', amqp10q, 'send', '5'])).stdout).toContain('the broker accepted 5');
      expect(await waitFor(async () => (await listQueues()).get(amqp10q)?.messages === 5)).toBe(true);
      const recv = await run('amqp10.js', ['--queue', amqp10q, 'receive', '5']);
      expect(recv.code).toBe(0);
      expect(recv.stdout).toContain('received and accepted 5 messages');
      expect(await emptied([tasks, amqp10q])).toBe(true);
    } finally {
      await deleteQueues([tasks, amqp10q, subscriberQueue(events, 'x'), subscriberQueue(events, 'y')], events);
    }
  });
});

describe('survive a crash (warren start)', () => {
  let base: string;
  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-ex-crash-'));
  });
  afterAll(() => {
    fs.rmSync(base, { recursive: true, force: true });
  });

  it(`gets every confirmed message back after a kill -9 of its own broker's VM and sidecar (RabbitMQ ${rabbitmqSeries()})`, async () => {
    const N = 500;
    const lines: string[] = [];
    const r = await surviveCrash({ count: N, queue: 'crash-demo', rabbitmq: rabbitmqSeries(), dataDir: path.join(base, 'var'), log: (l) => lines.push(l) });
    const ids = Array.from({ length: N }, (_, i) => `m-${i + 1}`);
    expect(r.broker).toMatch(new RegExp(`^RabbitMQ ${rabbitmqSeries().replace('.', '\\.')}\\.`));
    expect(r.published).toBe(N);
    expect(r.confirmed).toHaveLength(N);
    expect(r.confirmed.sort()).toEqual([...ids].sort());
    // killed, not stopped: the first warren start saw its broker die, and Warren recovered a store not closed cleanly
    expect(r.firstExit).not.toBe(0);
    expect(r.killed.sidecars.length).toBeGreaterThan(0);
    expect(r.storeOpenedClean).toBe(false);
    expect(r.inQueueAfterRestart).toBe(N);
    expect(r.recovered).toEqual(ids); // all back, once each, in publish order
    expect(r.missing).toEqual([]);
    expect(r.duplicates).toEqual([]);
    expect(r.finalExit).toBe(0);
    expect(lines).toContain(`${N} of ${N} confirmed messages came back, 0 missing, 0 duplicated`);
    // the suite's own broker was left alone
    expect(broker().isRunning()).toBe(true);
    expect(broker().beamPid()).not.toBe(r.killed.vm);
  });
});

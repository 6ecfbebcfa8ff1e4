/**
 * Shared helpers of the integration tests: the broker started by global-setup,
 * AMQP connections, and polling.
 */
import * as amqp from 'amqplib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Broker } from '../src/cli/broker';
import { Series } from '../src/cli/rabbitmq';

/**
 * Where global-setup records the run's broker: one file per jest process, so
 * that two integration runs on one machine (a CI run beside a developer's)
 * never read or stop each other's broker. Test files and the teardown find it
 * through WARREN_IT_STATE, which global-setup sets for its process and workers.
 */
export function stateFileOfThisRun(): string {
  return path.join(os.tmpdir(), `warren-it-state-${process.pid}.json`);
}

export interface TestState {
  dataDir: string;
  amqpPort: number;
  distPort: number;
  epmdPort: number;
  nodeName: string;
  /** The RabbitMQ series the run's broker is (3.10, 4.0, 4.3). */
  rabbitmq: Series;
  /** Small segment files and queue windows (see global-setup). */
  sidecarArgs: string[];
}


export function state(): TestState {
  const file = process.env.WARREN_IT_STATE;
  if (!file) throw new Error('WARREN_IT_STATE is not set: run the integration tests with jest.integration.config.js');
  return JSON.parse(fs.readFileSync(file, 'utf8')) as TestState;
}

export function broker(): Broker {
  return new Broker(state());
}

/** The run's RabbitMQ series: tests state each version's own behaviour with it. */
export function rabbitmqSeries(): Series {
  return state().rabbitmq;
}

export function amqpUrl(): string {
  return `amqp://guest:guest@127.0.0.1:${state().amqpPort}`;
}

/**
 * An AMQP 0-9-1 connection. Connection-level errors (the broker was killed or
 * stopped under it, as some tests do on purpose) are left to the operations
 * that fail because of them, instead of surfacing as unhandled events.
 */
export async function connect(): Promise<amqp.ChannelModel> {
  const conn = await amqp.connect(amqpUrl());
  conn.on('error', () => undefined);
  return conn;
}

/**
 * Stops the broker cleanly while `conn` is still open (its unacked deliveries
 * are unacked at the stop), starts it again and returns a new connection.
 */
export async function cleanRestart(conn: amqp.ChannelModel): Promise<amqp.ChannelModel> {
  const b = broker();
  await b.stop();
  await conn.close().catch(() => undefined);
  await b.start();
  return connect();
}

let counter = 0;
/** A queue name unique to this test run. */
export function qname(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter++}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls until `fn` returns a truthy value or the time is up; returns the last value. */
export async function waitFor<T>(fn: () => Promise<T>, timeoutMs = 30_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = await fn();
  while (!last && Date.now() < deadline) {
    await sleep(everyMs);
    last = await fn();
  }
  return last;
}

export interface QueueRow {
  name: string;
  messages: number;
  ready: number;
  unacked: number;
}

/** `rabbitmqctl list_queues name messages messages_ready messages_unacknowledged`, parsed. */
export async function listQueues(b: Broker = broker()): Promise<Map<string, QueueRow>> {
  const out = await b.ctl(['list_queues', '-q', '--no-table-headers', 'name', 'messages', 'messages_ready', 'messages_unacknowledged']);
  const rows = new Map<string, QueueRow>();
  for (const line of out.split('\n')) {
    const parts = line.trim().split(/\t/);
    if (parts.length !== 4) continue;
    const [name, messages, ready, unacked] = parts;
    rows.set(name, { name, messages: Number(messages), ready: Number(ready), unacked: Number(unacked) });
  }
  return rows;
}

/**
 * Consumes exactly `n` messages (prefetch n, manual ack) and cancels the
 * consumer; the messages stay unacked on the channel for the caller.
 */
export async function collect(ch: amqp.Channel, queue: string, n: number, timeoutMs = 60_000): Promise<amqp.ConsumeMessage[]> {
  const got: amqp.ConsumeMessage[] = [];
  let tag = '';
  if (n > 0) await ch.prefetch(n);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} messages arrived from ${queue}`)), timeoutMs);
    ch.consume(queue, (m) => {
      if (!m) return;
      got.push(m);
      if (got.length === n) {
        clearTimeout(timer);
        resolve();
      }
    })
      .then((ok) => {
        tag = ok.consumerTag;
        if (n === 0) {
          clearTimeout(timer);
          resolve();
        }
      })
      .catch(reject);
  });
  await ch.cancel(tag);
  return got;
}

/** Every message of `q` (no-ack gets), as strings; the queue is empty after. */
export async function drainBodies(ch: amqp.Channel, q: string): Promise<string[]> {
  const out: string[] = [];
  for (;;) {
    const m = await ch.get(q, { noAck: true });
    if (!m) return out;
    out.push(m.content.toString());
  }
}

/**
 * AMQP 1.0 sender and receiver (rhea) on a durable queue Warren stores.
 *
 * The sender sends durable messages and counts one as delivered when the
 * broker settles it as accepted: with Warren's default durability, once it
 * is fsynced. The receiver grants credit, accepts each message it takes, and
 * the broker removes a message from the queue only then.
 *
 * The address of a queue depends on the broker: RabbitMQ 4.x has AMQP 1.0
 * built in and names a queue `/queues/<queue>` (4.3 refuses the older form by
 * default); 3.10 speaks it through the rabbitmq_amqp1_0 plugin, with
 * `/amq/queue/<queue>`. The example reads the broker's version from the
 * connection properties the broker sends when the connection opens, and
 * picks the form; --address overrides it. Either way the queue must exist:
 * the example declares it (durable) over AMQP 0-9-1 first, unless given
 * --address.
 *
 *   node dist/examples/amqp10.js                   send 10 durable messages, receive and accept them, exit
 *   node dist/examples/amqp10.js send [count]      send messages (default 10) and exit
 *   node dist/examples/amqp10.js receive [count]   receive and accept messages (default 10) and exit
 *
 * Options: --queue NAME (default warren-amqp10), --address ADDRESS (instead of the queue's).
 * AMQP_URL defaults to amqp://guest:guest@127.0.0.1:5672, the node `npm start`
 * runs: AMQP 1.0 is on the same port, with SASL PLAIN and the same user.
 */
import * as amqp from 'amqplib';
import { Command } from 'commander';
import rhea, { Connection, ConnectionOptions, EventContext } from 'rhea';
import { DEFAULT_URL, count, failWith } from './cli-common';

const fail = failWith('amqp10');

/** rhea's connection options for an amqp:// URL: host, port, SASL PLAIN user and password, and the vhost. */
export function connectionOptions(url: string): ConnectionOptions {
  const u = new URL(url);
  const path = decodeURIComponent(u.pathname.replace(/^\//, ''));
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 5672),
    username: decodeURIComponent(u.username || 'guest'),
    password: decodeURIComponent(u.password || 'guest'),
    // RabbitMQ takes the vhost from the open frame's hostname, as vhost:<name>.
    hostname: `vhost:${path === '' ? '/' : path}`,
    reconnect: false,
  };
}

/** Opens an AMQP 1.0 connection; resolves once the broker's open frame arrived. */
export function openConnection(url: string): Promise<Connection> {
  const container = rhea.create_container();
  return new Promise((resolve, reject) => {
    const conn = container.connect(connectionOptions(url));
    conn.once('connection_open', () => resolve(conn));
    conn.once('connection_error', (ctx: EventContext) => reject(new Error(`connection refused: ${errorText(ctx.error ?? ctx.connection.get_error())}`)));
    conn.once('disconnected', (ctx: EventContext) => reject(ctx.error ?? new Error('disconnected')));
  });
}

/** The broker's version, from the properties of its open frame (RabbitMQ sends product and version), if it said. */
export function serverVersion(conn: Connection): string | undefined {
  const v: unknown = conn.properties?.version;
  return typeof v === 'string' ? v : undefined;
}

/** The AMQP 1.0 address of an existing queue on a RabbitMQ of that version. */
export function queueAddress(queue: string, version: string): string {
  const major = Number(/^(\d+)\./.exec(version)?.[1]);
  if (!Number.isInteger(major)) throw new Error(`cannot tell the address form from the broker version ${JSON.stringify(version)}; pass --address`);
  return major >= 4 ? `/queues/${encodeURIComponent(queue)}` : `/amq/queue/${queue}`;
}

/** An AMQP 1.0 error (condition and description) as text. */
function errorText(e: unknown): string {
  const { condition, description } = (e ?? {}) as { condition?: unknown; description?: unknown };
  if (condition === undefined) return e instanceof Error ? e.message : String(e);
  return description ? `${String(condition)}: ${String(description)}` : String(condition);
}

/**
 * Rejects with a failure of the connection or of a session on it (RabbitMQ
 * 4.x ends the session for an address with no queue behind it), until the
 * returned function is called.
 */
function failOnError(conn: Connection, reject: (e: Error) => void): () => void {
  const onError = (ctx: EventContext): void => reject(new Error(`connection error: ${errorText(ctx.error ?? ctx.connection.get_error())}`));
  const onSession = (ctx: EventContext): void => reject(new Error(`the broker ended the session: ${errorText(ctx.session?.error)}`));
  const onGone = (ctx: EventContext): void => reject(ctx.error ?? new Error('disconnected'));
  conn.on('connection_error', onError);
  conn.on('session_error', onSession);
  conn.on('disconnected', onGone);
  return () => {
    conn.removeListener('connection_error', onError);
    conn.removeListener('session_error', onSession);
    conn.removeListener('disconnected', onGone);
  };
}

/**
 * Sends each body as a durable message to `address`, as fast as the
 * broker's credit allows, and resolves with the number the broker accepted
 * (all of them) once it settled the last; rejects if it refused any.
 */
export function sendDurable(conn: Connection, address: string, bodies: readonly string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const sender = conn.open_sender({ target: { address } });
    let next = 0;
    let accepted = 0;
    const detach = failOnError(conn, (e) => finish(e));
    let settled = false;
    const finish = (e?: Error): void => {
      if (settled) return;
      settled = true;
      detach();
      sender.close();
      if (e) reject(e);
      else resolve(accepted);
    };
    const refused = (how: string) => (ctx: EventContext) => finish(new Error(`the broker ${how} a message: ${JSON.stringify(ctx.delivery?.remote_state ?? null)}`));
    sender.on('accepted', () => {
      if (++accepted === bodies.length) finish();
    });
    sender.on('rejected', refused('rejected'));
    sender.on('released', refused('released'));
    sender.on('modified', refused('modified'));
    sender.on('sender_error', (ctx: EventContext) => finish(new Error(`the sender was refused: ${errorText(ctx.sender?.error)}`)));
    // Send while the broker grants credit; 'sendable' says when it grants more.
    sender.on('sendable', () => {
      while (next < bodies.length && sender.sendable()) {
        sender.send({ body: bodies[next], durable: true, message_id: String(next + 1) });
        next++;
      }
    });
    if (bodies.length === 0) sender.once('sender_open', () => finish());
  });
}

export interface Received {
  body: string;
  /** The header's durable flag as the message arrived. */
  durable: boolean;
}

/** A body as text: a string (amqp-value, as sendDurable sends), or a data section (e.g. from an AMQP 0-9-1 publisher). */
function bodyText(body: unknown): string {
  if (Buffer.isBuffer(body)) return body.toString();
  const content = (body as { content?: unknown } | null)?.content;
  return Buffer.isBuffer(content) ? content.toString() : String(body);
}

/**
 * Receives `count` messages from `address` and accepts each: credit for at
 * most 100 at a time, topped up as they arrive, never more than `count` in
 * all, so no message is taken that is not accepted. Rejects if they do not
 * all arrive within `timeoutMs`.
 */
export function receiveAndAccept(conn: Connection, address: string, count: number, timeoutMs = 30_000): Promise<Received[]> {
  return new Promise((resolve, reject) => {
    const got: Received[] = [];
    const receiver = conn.open_receiver({ source: { address }, autoaccept: false, credit_window: 0 });
    let credited = 0;
    const detach = failOnError(conn, (e) => finish(e));
    let settled = false;
    const finish = (e?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      detach();
      receiver.close();
      if (e) reject(e);
      else resolve(got);
    };
    const timer = setTimeout(() => finish(new Error(`only ${got.length} of ${count} messages arrived from ${address}`)), timeoutMs);
    const credit = (n: number): void => {
      const more = Math.min(n, count - credited);
      if (more > 0) receiver.add_credit(more);
      credited += more;
    };
    // Credit only once the link is open (RabbitMQ 4.x ends a session given credit before it answered).
    receiver.once('receiver_open', () => {
      if (count === 0) finish();
      else credit(100);
    });
    receiver.on('receiver_error', (ctx: EventContext) => finish(new Error(`the receiver was refused: ${errorText(ctx.receiver?.error)}`)));
    receiver.on('message', (ctx: EventContext) => {
      const m = ctx.message!;
      got.push({ body: bodyText(m.body), durable: m.durable === true });
      ctx.delivery!.accept();
      if (got.length === count) finish();
      else credit(1);
    });
  });
}

/** Declares `queue` durable over AMQP 0-9-1; resolves with the number of messages already in it. */
export async function declareQueue(url: string, queue: string): Promise<number> {
  const conn = await amqp.connect(url);
  conn.on('error', () => undefined); // a failure also fails the operation below
  try {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    const { messageCount } = await ch.assertQueue(queue, { durable: true });
    await ch.close();
    return messageCount;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

export interface Amqp10DemoOptions {
  queue?: string;
  /** Use this address instead of the queue's (the queue is then not declared). */
  address?: string;
  count?: number;
  log?: (line: string) => void;
}

export interface Amqp10DemoResult {
  /** The broker's version as its open frame gave it, if it did. */
  version: string | undefined;
  address: string;
  /** The bodies sent, in order. */
  sent: string[];
  accepted: number;
  /** What the receiver took (and accepted) that this run sent, in order of arrival. */
  received: Received[];
  /** Messages already in the queue before this run, received (and accepted) first. */
  earlier: number;
}

/** Declares the queue, sends `count` durable messages, then receives and accepts them. */
export async function amqp10Demo(url: string, opts: Amqp10DemoOptions = {}): Promise<Amqp10DemoResult> {
  const queue = opts.queue ?? 'warren-amqp10';
  const n = opts.count ?? 10;
  const log = opts.log ?? (() => undefined);
  const earlier = opts.address === undefined ? await declareQueue(url, queue) : 0;
  const conn = await openConnection(url);
  try {
    const version = serverVersion(conn);
    const address = opts.address ?? queueAddress(queue, version ?? '');
    log(`connected to RabbitMQ ${version ?? '(version not given)'}: queue address ${address}`);
    const run = Date.now().toString(36);
    const sent = Array.from({ length: n }, (_, i) => `message ${i + 1} of ${n} (run ${run})`);
    const accepted = await sendDurable(conn, address, sent);
    log(`sent ${n} durable messages; the broker accepted ${accepted}`);
    const all = await receiveAndAccept(conn, address, earlier + n);
    const received = all.slice(earlier);
    log(`received and accepted ${received.length} messages${earlier > 0 ? ` (after ${earlier} left by earlier runs)` : ''}`);
    return { version, address, sent, accepted, received, earlier };
  } finally {
    conn.close();
  }
}

if (require.main === module) {
  const url = process.env.AMQP_URL ?? DEFAULT_URL;
  const program = new Command('amqp10')
    .description('AMQP 1.0 (rhea): durable messages to a durable queue, settled by the broker; a receiver that accepts each')
    .option('--queue <name>', 'the durable queue (declared over AMQP 0-9-1 first)', 'warren-amqp10')
    .option('--address <address>', "the AMQP 1.0 address to use instead of the queue's (not declared)");
  type Opts = { queue: string; address?: string };

  /** An open connection and the address to use: --address, or the queue's (declared) in the broker's form. */
  const target = async (): Promise<{ conn: Connection; address: string }> => {
    const { queue, address } = program.opts<Opts>();
    if (address === undefined) await declareQueue(url, queue);
    const conn = await openConnection(url);
    const version = serverVersion(conn);
    try {
      const a = address ?? queueAddress(queue, version ?? '');
      console.log(`amqp10: connected to RabbitMQ ${version ?? '(version not given)'}: address ${a}`);
      return { conn, address: a };
    } catch (e) {
      conn.close();
      throw e;
    }
  };

  program
    .command('demo', { isDefault: true })
    .description('send durable messages, then receive and accept them')
    .option('--count <n>', 'messages', count, 10)
    .action(async (o: { count: number }) => {
      const { queue, address } = program.opts<Opts>();
      const r = await amqp10Demo(url, { queue, address, count: o.count, log: (l) => console.log(`amqp10: ${l}`) }).catch(fail);
      const same = r.received.length === r.sent.length && r.received.every((m, i) => m.body === r.sent[i] && m.durable);
      for (const m of r.received.slice(0, 3)) console.log(`amqp10:   ${m.body}${m.durable ? ' (durable)' : ''}`);
      if (r.received.length > 3) console.log(`amqp10:   ...`);
      if (same) {
        console.log(`amqp10: all ${r.sent.length} messages came back, durable, in order`);
      } else {
        console.error('amqp10: the messages received are not the ones sent');
        process.exitCode = 1;
      }
    });

  program
    .command('send')
    .description('send durable messages and exit once the broker accepted them')
    .argument('[count]', 'messages', count, 10)
    .action(async (n: number) => {
      const { conn, address } = await target().catch(fail);
      const at = new Date().toISOString();
      const bodies = Array.from({ length: n }, (_, i) => `message ${i + 1} of ${n} (sent ${at})`);
      const accepted = await sendDurable(conn, address, bodies).catch(fail);
      conn.close();
      console.log(`amqp10: sent ${n} durable messages; the broker accepted ${accepted}`);
    });

  program
    .command('receive')
    .description('receive and accept messages, then exit')
    .argument('[count]', 'messages', count, 10)
    .action(async (n: number) => {
      const { conn, address } = await target().catch(fail);
      const got = await receiveAndAccept(conn, address, n).catch(fail);
      conn.close();
      for (const m of got) console.log(`amqp10: ${m.body}`);
      console.log(`amqp10: received and accepted ${got.length} messages`);
    });

  program.parseAsync(process.argv).catch(fail);
}

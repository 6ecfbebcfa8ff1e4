/**
 * Publish/subscribe: every subscriber gets every event (AMQP 0-9-1, amqplib).
 *
 * The publisher sends persistent messages to a durable fanout exchange on a
 * confirm channel. Each subscriber has a durable queue of its own bound to
 * the exchange, so the broker puts a copy of each event in every queue (with
 * Warren, one stored body shared by all the queues, counted by reference), and
 * events published while a subscriber is away wait in its queue, across a
 * broker restart too. An exchange delivers only to the queues bound when the
 * message arrives: declare the subscribers' queues before publishing.
 *
 *   node dist/examples/pubsub.js                   3 subscribers, 20 events, exit once each has all of them
 *   node dist/examples/pubsub.js publish [count]   publish events (default 20) and exit
 *   node dist/examples/pubsub.js subscribe NAME    receive into the queue <exchange>.NAME until Ctrl-C
 *
 * Options: --exchange NAME (default warren-events), --subscribers a,b,c (default billing,audit,email).
 * AMQP_URL defaults to amqp://guest:guest@127.0.0.1:5672, the node `npm start` runs.
 */
import * as amqp from 'amqplib';
import { Command } from 'commander';
import { DEFAULT_URL, connect, count, failWith } from './cli-common';

const fail = failWith('pubsub');

/** The durable queue of subscriber `name` on `exchange`. */
export function subscriberQueue(exchange: string, name: string): string {
  return `${exchange}.${name}`;
}

/** Declares the durable fanout exchange and binds a durable queue to it for each subscriber; resolves with the queues. */
export async function declareSubscribers(url: string, exchange: string, subscribers: readonly string[]): Promise<string[]> {
  const conn = await connect(url);
  try {
    const ch = await conn.createChannel();
    await ch.assertExchange(exchange, 'fanout', { durable: true });
    const queues: string[] = [];
    for (const name of subscribers) {
      const q = subscriberQueue(exchange, name);
      await ch.assertQueue(q, { durable: true });
      await ch.bindQueue(q, exchange, ''); // a fanout exchange ignores the routing key
      queues.push(q);
    }
    await ch.close();
    return queues;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/**
 * Publishes each event as a persistent message to the fanout `exchange` and
 * waits for the broker's confirms (a confirm covers every queue the message
 * was routed to). Resolves with the number confirmed; rejects on a nack.
 */
export async function publishEvents(url: string, exchange: string, events: readonly string[]): Promise<number> {
  const conn = await connect(url);
  try {
    const ch = await conn.createConfirmChannel();
    ch.on('error', () => undefined);
    await ch.assertExchange(exchange, 'fanout', { durable: true });
    let confirmed = 0;
    for (const event of events) {
      const ok = ch.publish(exchange, '', Buffer.from(event), { persistent: true, contentType: 'text/plain' }, (err) => {
        if (!err) confirmed++;
      });
      if (!ok) await new Promise<void>((resolve) => ch.once('drain', resolve));
    }
    await ch.waitForConfirms();
    await ch.close();
    return confirmed;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

export interface Subscription {
  /** Events received and acked so far. */
  readonly received: number;
  /** Cancels the consumer and disconnects (what is not acked stays in the queue). */
  stop(): Promise<void>;
}

export interface SubscribeOptions {
  /** Unacknowledged events in hand at most (default 50). */
  prefetch?: number;
  /** Called if the subscription loses its channel without being stopped (unacked events stay queued). */
  onLost?: (why: Error) => void;
}

/**
 * Consumes a subscriber's queue with manual acks: each event is acked once
 * `onEvent` has returned (or its promise resolved); if it throws, the event
 * goes back to the queue.
 */
export async function subscribe(
  url: string,
  queue: string,
  onEvent: (event: string, msg: amqp.ConsumeMessage) => void | Promise<void>,
  opts: SubscribeOptions = {},
): Promise<Subscription> {
  const conn = await connect(url);
  const ch = await conn.createChannel();
  let stopping = false;
  let lastError: Error | undefined;
  ch.on('error', (e: Error) => (lastError = e));
  ch.on('close', () => {
    if (!stopping) opts.onLost?.(lastError ?? new Error('the channel closed'));
  });
  await ch.prefetch(opts.prefetch ?? 50);
  let received = 0;
  const inHand = new Set<Promise<void>>();
  const { consumerTag } = await ch.consume(queue, (msg) => {
    if (!msg) return;
    const p = (async () => {
      try {
        await onEvent(msg.content.toString(), msg);
        ch.ack(msg);
        received++;
      } catch {
        try {
          ch.nack(msg, false, true);
        } catch {
          // the channel is gone: the broker requeues what was not acked
        }
      }
    })().finally(() => inHand.delete(p));
    inHand.add(p);
  });
  return {
    get received() {
      return received;
    },
    async stop() {
      stopping = true;
      await ch.cancel(consumerTag);
      await Promise.all(inHand);
      await ch.close();
      await conn.close();
    },
  };
}

export interface PubSubDemoOptions {
  exchange?: string;
  subscribers?: string[];
  events?: number;
  log?: (line: string) => void;
}

export interface PubSubDemoResult {
  exchange: string;
  /** The events this run published, in order. */
  events: string[];
  confirmed: number;
  /** Per subscriber name, the events of this run it received, in order of arrival. */
  received: Record<string, string[]>;
  /** Events left in the subscribers' queues by earlier runs, received along the way. */
  earlier: number;
}

/**
 * Declares the subscribers' queues, starts a consumer on each, publishes
 * `events` events and resolves once every subscriber has received all of them.
 */
export async function pubSubDemo(url: string, opts: PubSubDemoOptions = {}): Promise<PubSubDemoResult> {
  const exchange = opts.exchange ?? 'warren-events';
  const names = opts.subscribers ?? ['billing', 'audit', 'email'];
  const n = opts.events ?? 20;
  const log = opts.log ?? (() => undefined);
  const run = Date.now().toString(36);
  const events = Array.from({ length: n }, (_, i) => `event ${i + 1} of ${n} (run ${run})`);
  const ours = new Set(events);

  const queues = await declareSubscribers(url, exchange, names);
  log(`fanout exchange '${exchange}' with ${names.length} subscriber queues: ${queues.join(', ')}`);
  const received: Record<string, string[]> = {};
  let earlier = 0;
  let complete = 0;
  let allDone: () => void = () => undefined;
  let lost: (why: Error) => void = () => undefined;
  const finished = new Promise<void>((resolve, reject) => {
    allDone = resolve;
    lost = (why) => reject(new Error(`a subscriber lost its channel: ${why.message}`));
  });
  finished.catch(() => undefined); // awaited below; not unhandled meanwhile
  if (n === 0 || names.length === 0) allDone();

  const subs: Subscription[] = [];
  try {
    for (const name of names) {
      const got: string[] = (received[name] = []);
      subs.push(
        await subscribe(url, subscriberQueue(exchange, name), (event) => {
          if (!ours.has(event)) {
            earlier++;
            return;
          }
          got.push(event);
          if (got.length === n && ++complete === names.length) allDone();
        }, { onLost: lost }),
      );
    }
    const confirmed = await publishEvents(url, exchange, events);
    log(`published ${n} persistent events to '${exchange}'; the broker confirmed ${confirmed}`);
    await finished;
    return { exchange, events, confirmed, received, earlier };
  } finally {
    await Promise.all(subs.map((s) => s.stop().catch(() => undefined)));
  }
}

if (require.main === module) {
  const url = process.env.AMQP_URL ?? DEFAULT_URL;
  const program = new Command('pubsub')
    .description('publish/subscribe with a durable fanout exchange: every subscriber queue gets every persistent event')
    .option('--exchange <name>', 'the durable fanout exchange', 'warren-events');
  const exchangeOpt = (): string => program.opts<{ exchange: string }>().exchange;

  program
    .command('demo', { isDefault: true })
    .description('declare and start the subscribers, publish events, wait until every subscriber has every event, exit')
    .option('--events <n>', 'events to publish', count, 20)
    .option('--subscribers <names>', 'comma-separated subscriber names', 'billing,audit,email')
    .action(async (o: { events: number; subscribers: string }) => {
      const subscribers = o.subscribers.split(',').filter((s) => s.length > 0);
      const r = await pubSubDemo(url, { exchange: exchangeOpt(), subscribers, events: o.events, log: (l) => console.log(`pubsub: ${l}`) }).catch(fail);
      let ok = true;
      for (const name of subscribers) {
        const got = r.received[name];
        const all = new Set(got).size === r.events.length && got.length === r.events.length;
        ok &&= all;
        console.log(`pubsub: subscriber '${name}' received ${got.length} of ${r.events.length} events${all ? '' : ' (NOT every event exactly once)'}`);
      }
      if (r.earlier > 0) console.log(`pubsub: plus ${r.earlier} events left in the queues by earlier runs`);
      if (ok) console.log(`pubsub: every subscriber received every event`);
      else process.exitCode = 1;
    });

  program
    .command('publish')
    .description('publish events and exit once the broker confirmed them')
    .argument('[count]', 'events to publish', count, 20)
    .action(async (n: number) => {
      const exchange = exchangeOpt();
      const at = new Date().toISOString();
      const events = Array.from({ length: n }, (_, i) => `event ${i + 1} of ${n} (published ${at})`);
      const confirmed = await publishEvents(url, exchange, events).catch(fail);
      console.log(`pubsub: published ${n} persistent events to '${exchange}'; the broker confirmed ${confirmed}`);
    });

  program
    .command('subscribe')
    .description('declare the queue <exchange>.NAME, bind it, and print its events until Ctrl-C')
    .argument('<name>', 'the subscriber')
    .action(async (name: string) => {
      const exchange = exchangeOpt();
      const [queue] = await declareSubscribers(url, exchange, [name]).catch(fail);
      const sub = await subscribe(url, queue, (event) => console.log(`pubsub: ${name}: ${event}`), {
        onLost: (why) => fail(new Error(`lost the broker: ${why.message}`)),
      }).catch(fail);
      console.log(`pubsub: subscriber '${name}' on '${queue}' (bound to '${exchange}'); Ctrl-C stops it`);
      process.once('SIGINT', () => {
        sub.stop().then(() => console.log(`pubsub: stopped after ${sub.received} events`), fail);
      });
    });

  program.parseAsync(process.argv).catch(fail);
}

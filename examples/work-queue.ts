/**
 * Work queue: tasks shared out among competing workers (AMQP 0-9-1, amqplib).
 *
 * The producer publishes each task as a persistent message to a durable queue
 * on a confirm channel, and counts a task as handed over only once the broker
 * confirms it: with Warren's default durability, once the message is fsynced.
 * Workers consume with manual acks and a prefetch: the broker hands a worker
 * at most `prefetch` unacknowledged tasks at a time, and the worker acks a
 * task only after processing it. A task whose worker dies before the ack goes back to
 * the queue for another worker, and the tasks still in the queue survive a
 * restart (or a crash) of the broker.
 *
 *   node dist/examples/work-queue.js                  publish 100 tasks, process them with 3 workers, exit
 *   node dist/examples/work-queue.js publish [count]  publish tasks (default 100) and exit
 *   node dist/examples/work-queue.js worker           process tasks until Ctrl-C
 *
 * Options: --queue NAME (default warren-tasks), --prefetch N (10), --workers N (3), --work-ms N (5).
 * AMQP_URL defaults to amqp://guest:guest@127.0.0.1:5672, the node `npm start` runs.
 */
import * as amqp from 'amqplib';
import { Command } from 'commander';
import { DEFAULT_URL, connect, count, positive, failWith } from './cli-common';

const fail = failWith('work-queue');

/**
 * Publishes each task as a persistent message to the durable `queue` and
 * waits for the broker's confirms. Resolves with the number confirmed (all of
 * them); rejects if the broker refused (nacked) any.
 */
export async function publishTasks(url: string, queue: string, tasks: readonly string[]): Promise<number> {
  const conn = await connect(url);
  try {
    const ch = await conn.createConfirmChannel();
    ch.on('error', () => undefined);
    await ch.assertQueue(queue, { durable: true });
    let confirmed = 0;
    for (const task of tasks) {
      const ok = ch.sendToQueue(queue, Buffer.from(task), { persistent: true, contentType: 'text/plain' }, (err) => {
        if (!err) confirmed++;
      });
      // The socket's buffer is full: wait until it drains before writing more.
      if (!ok) await new Promise<void>((resolve) => ch.once('drain', resolve));
    }
    await ch.waitForConfirms();
    await ch.close();
    return confirmed;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

export interface WorkerOptions {
  /** How many unacknowledged tasks the broker hands this worker at most (default 10). */
  prefetch?: number;
  /**
   * Processes one task. The task is acked once this resolves; if it throws,
   * the task goes back to the queue (nack with requeue) for another attempt.
   */
  process: (task: string, msg: amqp.ConsumeMessage) => Promise<void>;
  /**
   * Called if the worker loses its channel without being stopped (the broker
   * went away, or closed it): its unacked tasks are back in the queue.
   */
  onLost?: (why: Error) => void;
}

export interface Worker {
  /** Tasks processed and acked so far. */
  readonly processed: number;
  /** Stops taking tasks, finishes (and acks) the ones in hand, and disconnects. */
  stop(): Promise<void>;
}

/** A worker on the durable `queue`: manual acks, at most `prefetch` tasks in hand. */
export async function startWorker(url: string, queue: string, opts: WorkerOptions): Promise<Worker> {
  const conn = await connect(url);
  const ch = await conn.createChannel();
  let stopping = false;
  let lastError: Error | undefined;
  ch.on('error', (e: Error) => (lastError = e));
  ch.on('close', () => {
    if (!stopping) opts.onLost?.(lastError ?? new Error('the channel closed'));
  });
  await ch.assertQueue(queue, { durable: true });
  await ch.prefetch(opts.prefetch ?? 10);
  let processed = 0;
  const inHand = new Set<Promise<void>>();

  const handle = async (msg: amqp.ConsumeMessage): Promise<void> => {
    let done = false;
    try {
      await opts.process(msg.content.toString(), msg);
      done = true;
    } catch {
      // fall through: the task is requeued below
    }
    try {
      if (done) {
        ch.ack(msg);
        processed++;
      } else {
        ch.nack(msg, false, true);
      }
    } catch {
      // The channel is gone (the connection dropped): the broker requeues
      // every task this worker had not acked, and another worker gets it.
    }
  };

  const { consumerTag } = await ch.consume(
    queue,
    (msg) => {
      if (!msg) return; // the broker cancelled the consumer (the queue was deleted)
      const p = handle(msg).finally(() => inHand.delete(p));
      inHand.add(p);
    },
    { noAck: false },
  );

  return {
    get processed() {
      return processed;
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

export interface WorkQueueDemoOptions {
  queue?: string;
  tasks?: number;
  workers?: number;
  prefetch?: number;
  /** How long processing a task takes, in ms (default 5). */
  workMs?: number;
  log?: (line: string) => void;
}

export interface WorkQueueDemoResult {
  queue: string;
  /** The bodies of the tasks this run published, in order. */
  tasks: string[];
  confirmed: number;
  /** Per worker, the tasks of this run it processed and acked. */
  processedBy: string[][];
  /** Per worker, the most tasks it had in hand at once (never above the prefetch). */
  maxInHand: number[];
  /** Tasks left in the queue by earlier runs, processed along the way. */
  earlier: number;
}

/**
 * Starts `workers` workers on the queue, publishes `tasks` tasks, and
 * resolves once every one of them has been processed and acked.
 */
export async function workQueueDemo(url: string, opts: WorkQueueDemoOptions = {}): Promise<WorkQueueDemoResult> {
  const queue = opts.queue ?? 'warren-tasks';
  const n = opts.tasks ?? 100;
  const workMs = opts.workMs ?? 5;
  const prefetch = opts.prefetch ?? 10;
  const log = opts.log ?? (() => undefined);
  const run = Date.now().toString(36);
  const tasks = Array.from({ length: n }, (_, i) => `task ${i + 1} of ${n} (run ${run})`);
  const ours = new Set(tasks);

  const processedBy: string[][] = [];
  const maxInHand: number[] = [];
  let earlier = 0;
  let done = 0;
  let allDone: () => void = () => undefined;
  let lost: (why: Error) => void = () => undefined;
  const finished = new Promise<void>((resolve, reject) => {
    allDone = resolve;
    lost = (why) => reject(new Error(`a worker lost its channel: ${why.message}`));
  });
  finished.catch(() => undefined); // awaited below; not unhandled meanwhile
  if (n === 0) allDone();

  const workers: Worker[] = [];
  try {
    for (let w = 0; w < (opts.workers ?? 3); w++) {
      processedBy.push([]);
      maxInHand.push(0);
      let inHand = 0;
      workers.push(
        await startWorker(url, queue, {
          prefetch,
          process: async (task) => {
            maxInHand[w] = Math.max(maxInHand[w], ++inHand);
            await new Promise((resolve) => setTimeout(resolve, workMs)); // the "work"
            inHand--;
            if (!ours.has(task)) {
              earlier++;
              return;
            }
            processedBy[w].push(task);
            if (++done === n) allDone();
          },
          onLost: lost,
        }),
      );
    }
    const confirmed = await publishTasks(url, queue, tasks);
    log(`published ${n} persistent tasks to '${queue}'; the broker confirmed ${confirmed}`);
    await finished;
    return { queue, tasks, confirmed, processedBy, maxInHand, earlier };
  } finally {
    await Promise.all(workers.map((w) => w.stop().catch(() => undefined)));
  }
}

if (require.main === module) {
  const url = process.env.AMQP_URL ?? DEFAULT_URL;
  const program = new Command('work-queue')
    .description('a work queue on a durable queue: persistent tasks with publisher confirms, workers with manual acks and a prefetch')
    .option('--queue <name>', 'the durable queue', 'warren-tasks')
    .option('--prefetch <n>', 'unacknowledged tasks per worker at most', positive, 10)
    .option('--work-ms <n>', 'how long processing a task takes', count, 5);
  type Opts = { queue: string; prefetch: number; workMs: number };

  program
    .command('demo', { isDefault: true })
    .description('start workers, publish tasks, wait until every task is processed, exit')
    .option('--tasks <n>', 'tasks to publish', count, 100)
    .option('--workers <n>', 'workers', positive, 3)
    .action(async (o: { tasks: number; workers: number }) => {
      const g = program.opts<Opts>();
      const r = await workQueueDemo(url, { ...g, ...o, log: (l) => console.log(`work-queue: ${l}`) }).catch(fail);
      const seen = new Map<string, number>();
      for (const t of r.processedBy.flat()) seen.set(t, (seen.get(t) ?? 0) + 1);
      const twice = [...seen.values()].filter((c) => c > 1).length;
      const missing = r.tasks.filter((t) => !seen.has(t)).length;
      console.log(`work-queue: ${r.processedBy.map((p, w) => `worker ${w + 1} processed ${p.length}`).join(', ')} (at most ${Math.max(...r.maxInHand)} in hand, prefetch ${g.prefetch})`);
      if (r.earlier > 0) console.log(`work-queue: plus ${r.earlier} tasks left in '${r.queue}' by earlier runs`);
      if (twice === 0 && missing === 0) {
        console.log(`work-queue: all ${r.tasks.length} tasks processed and acked, each exactly once`);
      } else {
        console.error(`work-queue: ${missing} tasks never processed, ${twice} processed more than once`);
        process.exitCode = 1;
      }
    });

  program
    .command('publish')
    .description('publish tasks and exit once the broker confirmed them')
    .argument('[count]', 'tasks to publish', count, 100)
    .action(async (n: number) => {
      const { queue } = program.opts<Opts>();
      const at = new Date().toISOString();
      const tasks = Array.from({ length: n }, (_, i) => `task ${i + 1} of ${n} (published ${at})`);
      const confirmed = await publishTasks(url, queue, tasks).catch(fail);
      console.log(`work-queue: published ${n} persistent tasks to '${queue}'; the broker confirmed ${confirmed}`);
    });

  program
    .command('worker')
    .description('process tasks until Ctrl-C (then finish and ack those in hand)')
    .action(async () => {
      const { queue, prefetch, workMs } = program.opts<Opts>();
      const worker = await startWorker(url, queue, {
        prefetch,
        process: async (task) => {
          await new Promise((resolve) => setTimeout(resolve, workMs));
          console.log(`work-queue: done: ${task}`);
        },
        onLost: (why) => fail(new Error(`lost the broker: ${why.message}`)),
      }).catch(fail);
      console.log(`work-queue: worker on '${queue}' (prefetch ${prefetch}); Ctrl-C stops it`);
      process.once('SIGINT', () => {
        worker.stop().then(() => console.log(`work-queue: stopped after ${worker.processed} tasks`), fail);
      });
    });

  program.parseAsync(process.argv).catch(fail);
}

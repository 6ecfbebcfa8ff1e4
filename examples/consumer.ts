/**
 * Consumes and acks messages from a durable queue until it has been idle for a second.
 *   node dist/examples/consumer.js [queue] [max]   (built by npm run build)
 * AMQP_URL defaults to amqp://guest:guest@127.0.0.1:5672.
 */
import * as amqp from 'amqplib';

export async function consume(url: string, queue: string, max: number, idleMs = 1000): Promise<string[]> {
  const conn = await amqp.connect(url);
  const got: string[] = [];
  try {
    const ch = await conn.createChannel();
    await ch.assertQueue(queue, { durable: true });
    await ch.prefetch(Math.max(1, Math.min(100, max)));
    await new Promise<void>((resolve) => {
      let idle = setTimeout(resolve, idleMs);
      void ch.consume(queue, (m) => {
        if (!m) return;
        got.push(m.content.toString());
        ch.ack(m);
        clearTimeout(idle);
        idle = setTimeout(resolve, got.length >= max ? 0 : idleMs);
      });
    });
    await ch.close();
    return got;
  } finally {
    await conn.close();
  }
}

if (require.main === module) {
  const queue = process.argv[2] ?? 'warren-demo';
  const max = Number(process.argv[3] ?? Infinity);
  const url = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
  consume(url, queue, max).then(
    (msgs) => {
      for (const m of msgs) console.log(m);
      console.log(`consumed and acked ${msgs.length} messages from '${queue}'`);
    },
    (e: Error) => {
      console.error(`consumer failed: ${e.message}`);
      process.exit(1);
    },
  );
}

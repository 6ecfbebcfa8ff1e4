/**
 * Publishes persistent messages to a durable queue with publisher confirms.
 *   node dist/examples/producer.js [count] [queue]   (built by npm run build)
 * AMQP_URL defaults to amqp://guest:guest@127.0.0.1:5672.
 */
import * as amqp from 'amqplib';

export async function produce(url: string, queue: string, count: number): Promise<number> {
  const conn = await amqp.connect(url);
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(queue, { durable: true });
    for (let i = 0; i < count; i++) {
      const body = Buffer.from(JSON.stringify({ n: i, at: new Date().toISOString() }));
      ch.sendToQueue(queue, body, { persistent: true, messageId: `m-${i}` });
    }
    await ch.waitForConfirms();
    return count;
  } finally {
    await conn.close();
  }
}

if (require.main === module) {
  const count = Number(process.argv[2] ?? 10);
  const queue = process.argv[3] ?? 'warren-demo';
  const url = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
  produce(url, queue, count).then(
    (n) => console.log(`published and confirmed ${n} persistent messages to '${queue}'`),
    (e: Error) => {
      console.error(`producer failed: ${e.message}`);
      process.exit(1);
    },
  );
}

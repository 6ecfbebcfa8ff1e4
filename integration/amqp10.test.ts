/**
 * AMQP 1.0 (rhea) through RabbitMQ's rabbitmq_amqp1_0 plugin, on a durable
 * queue backed by Warren.
 */
import rhea, { Connection, Delivery, EventContext } from 'rhea';
import { connect, listQueues, qname, state, waitFor } from './harness';

interface Got {
  body: string;
  firstAcquirer: boolean | undefined;
  deliveryCount: number | undefined;
  durable: boolean | undefined;
  delivery: Delivery;
}

function open(): Promise<Connection> {
  const container = rhea.create_container();
  return new Promise((resolve, reject) => {
    const c = container.connect({
      host: '127.0.0.1',
      port: state().amqpPort,
      username: 'guest',
      password: 'guest',
      reconnect: false,
      hostname: 'vhost:/',
    });
    c.once('connection_open', () => resolve(c));
    c.once('connection_error', (ctx: EventContext) => reject(new Error(String(ctx.connection.error))));
    c.once('disconnected', (ctx: EventContext) => reject(ctx.error ?? new Error('disconnected')));
  });
}

it('sends durable messages with settlement, receives and accepts them, and release gives a message again', async () => {
  const q = qname('amqp10');
  const amqp091 = await connect();
  const setup = await amqp091.createChannel();
  await setup.assertQueue(q, { durable: true });

  const conn = await open();
  try {
    // Send, each settled by the broker (accepted) only once Warren confirmed it.
    const sender = conn.open_sender({ target: { address: `/amq/queue/${q}` } });
    await new Promise<void>((resolve) => sender.once('sendable', () => resolve()));
    const N = 20;
    const settled = new Set<number>();
    await new Promise<void>((resolve, reject) => {
      sender.on('accepted', (ctx: EventContext) => {
        settled.add(Number((ctx.delivery as Delivery & { tag: Buffer }).tag.toString()));
        if (settled.size === N) resolve();
      });
      sender.on('rejected', () => reject(new Error('a message was rejected')));
      for (let i = 0; i < N; i++) sender.send({ body: `amqp10-${i}`, durable: true, message_id: String(i) }, Buffer.from(String(i)));
    });
    expect(settled.size).toBe(N);
    expect(await waitFor(async () => (await listQueues()).get(q)?.messages === N)).toBe(true);

    // Receive with manual settlement: accept all but the first, release the first.
    const receiver = conn.open_receiver({ source: { address: `/amq/queue/${q}` }, autoaccept: false, credit_window: 0 });
    const got: Got[] = [];
    receiver.on('message', (ctx: EventContext) => {
      const m = ctx.message!;
      got.push({
        body: String(m.body),
        firstAcquirer: m.first_acquirer,
        deliveryCount: m.delivery_count,
        durable: m.durable,
        delivery: ctx.delivery!,
      });
    });
    receiver.add_credit(N);
    await waitFor(async () => got.length === N, 30_000, 20);
    expect(got.map((g) => g.body)).toEqual(Array.from({ length: N }, (_, i) => `amqp10-${i}`));
    expect(got.every((g) => g.durable === true)).toBe(true);
    got.slice(1).forEach((g) => g.delivery.accept());
    got[0].delivery.release();
    receiver.add_credit(1);
    await waitFor(async () => got.length === N + 1, 30_000, 20);
    const again = got[N];
    expect(again.body).toBe('amqp10-0');
    // Released and delivered again: no longer the first acquirer.
    expect(again.firstAcquirer).toBe(false);
    again.delivery.accept();
    expect(await waitFor(async () => (await listQueues()).get(q)?.messages === 0)).toBe(true);
    receiver.close();
    sender.close();
  } finally {
    conn.close();
    await setup.deleteQueue(q);
    await amqp091.close();
  }
});

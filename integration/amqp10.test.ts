/**
 * AMQP 1.0 (rhea) on a durable queue backed by Warren: through the
 * rabbitmq_amqp1_0 plugin on 3.10, RabbitMQ's native AMQP 1.0 on 4.x.
 */
import rhea, { Connection, Delivery, EventContext } from 'rhea';
import { broker, connect, listQueues, qname, rabbitmqSeries, state, waitFor } from './harness';

/**
 * A queue's address: 3.10 knows only the v1 form; 4.x has v2 addresses, and
 * 4.3 refuses the v1 form unless the deprecated feature is permitted.
 */
function queueAddress(q: string): string {
  return rabbitmqSeries() === '3.10' ? `/amq/queue/${q}` : `/queues/${encodeURIComponent(q)}`;
}

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
    const sender = conn.open_sender({ target: { address: queueAddress(q) } });
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
    const receiver = conn.open_receiver({ source: { address: queueAddress(q) }, autoaccept: false, credit_window: 0 });
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

/** An AMQP 0-9-1 body reaches an AMQP 1.0 client as a data section. */
function bodyText(body: unknown): string {
  if (Buffer.isBuffer(body)) return body.toString();
  const content = (body as { content?: unknown } | null)?.content;
  return Buffer.isBuffer(content) ? content.toString() : String(body);
}

/**
 * Opens a connection, takes the head of `q` on a receiver with manual
 * settlement, and closes the connection with it unsettled: a failed
 * delivery (the queue requeues it as such). Resolves with the header's
 * delivery-count (0 when absent) once the message is ready again.
 */
async function deliverAndFail(q: string): Promise<number> {
  const conn = await open();
  try {
    const count = await new Promise<number>((resolve) => {
      const receiver = conn.open_receiver({ source: { address: queueAddress(q) }, autoaccept: false, credit_window: 0 });
      receiver.once('message', (ctx: EventContext) => {
        expect(bodyText(ctx.message!.body)).toBe('counted');
        resolve(ctx.message!.delivery_count ?? 0);
      });
      // Credit only once the link is open: a FLOW sent before the broker's
      // BEGIN has no next-incoming-id, and 4.x ends the session for it.
      receiver.once('receiver_open', () => receiver.add_credit(1));
    });
    return count;
  } finally {
    conn.close();
    expect(await waitFor(async () => (await listQueues()).get(q)?.ready === 1)).toBe(true);
  }
}

it("counts failed deliveries as the broker's own classic queue does: on 4.3 across a clean stop, and as one after a kill -9", async () => {
  const q = qname('amqp10-count');
  const series = rabbitmqSeries();
  const amqp091 = await connect();
  const ch = await amqp091.createConfirmChannel();
  await ch.assertQueue(q, { durable: true });
  ch.sendToQueue(q, Buffer.from('counted'), { persistent: true });
  await ch.waitForConfirms();

  const seen: number[] = [];
  seen.push(await deliverAndFail(q));
  seen.push(await deliverAndFail(q));
  const b = broker();
  await b.stop();
  await b.start();
  seen.push(await deliverAndFail(q));
  await b.kill();
  await b.start();
  seen.push(await deliverAndFail(q));
  // 4.3 counts each failure, keeps the count across the clean stop, and
  // counts a message recovered after a crash as delivered once. Before 4.3
  // classic queues count nothing.
  expect(seen).toEqual(series === '4.3' ? [0, 1, 2, 1] : [0, 0, 0, 0]);
  const c = await connect();
  await (await c.createChannel()).deleteQueue(q);
  await c.close();
  await amqp091.close().catch(() => undefined);
});

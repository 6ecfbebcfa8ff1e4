/**
 * `--durability write`, through the real broker: a confirm follows the write
 * to the kernel, and the fsync comes later (README "Durability"). A kill -9 of
 * a process is no crash of the machine, so every confirmed message must still
 * come back when the sidecar alone, or the whole broker, is killed at once
 * after the confirms, before the interval's fsync (set long here, 60 s, so
 * that it cannot have run).
 */
import * as amqp from 'amqplib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Broker } from '../src/cli/broker';
import { freePort } from '../src/cli/ports';
import { waitFor } from './harness';

const N = 3000;
const bodyOf = (q: string, i: number): Buffer => Buffer.concat([Buffer.from(`${q}:${i}|`), Buffer.alloc(1024, i & 0xff)]);

describe('durability write under the real broker', () => {
  let base: string;
  let b: Broker;
  let url: string;

  beforeAll(async () => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-dw-'));
    const amqpPort = await freePort();
    b = new Broker({
      dataDir: path.join(base, 'data'),
      amqpPort,
      distPort: await freePort(),
      epmdPort: await freePort(),
      nodeName: `warren-dw-${process.pid}@localhost`,
      sidecarArgs: ['--durability', 'write', '--write-sync-interval-ms', '60000'],
    });
    await b.start();
    url = `amqp://guest:guest@127.0.0.1:${amqpPort}`;
  });

  afterAll(async () => {
    if (b) {
      for (const line of b.errorEntries(40)) process.stdout.write(`${line}\n`);
      await b.kill();
    }
    fs.rmSync(base, { recursive: true, force: true });
  });

  /** Publishes N persistent messages to a new durable queue; resolves once all are confirmed. */
  async function publishConfirmed(q: string): Promise<void> {
    const conn = await amqp.connect(url);
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(q, { durable: true });
    await b.ctl(['eval', 'mnesia:dump_log().']); // the declaration survives the kill (see crash.test.ts)
    for (let i = 0; i < N; i++) ch.sendToQueue(q, bodyOf(q, i), { persistent: true });
    await ch.waitForConfirms();
    await conn.close();
  }

  /** Every message of `q`, in order and intact, then the queue deleted. */
  async function expectAllBack(q: string): Promise<void> {
    const conn = await amqp.connect(url);
    const ch = await conn.createChannel();
    const got: Buffer[] = [];
    for (let m = await ch.get(q, { noAck: true }); m; m = await ch.get(q, { noAck: true })) got.push(m.content);
    expect(got.length).toBe(N);
    got.forEach((c, i) => expect(c.equals(bodyOf(q, i))).toBe(true));
    await ch.deleteQueue(q);
    await conn.close();
  }

  it('runs the sidecar in write mode', () => {
    const log = fs.readFileSync(b.logFile, 'utf8');
    expect(log).toMatch(/durability write \(fsync every 60000 ms\)/);
  });

  it('loses no confirmed message to a kill -9 of the sidecar right after the confirms', async () => {
    const q = 'dw-sidecar';
    await publishConfirmed(q);
    // Confirmed without an fsync of the store: its first comes after the interval.
    const out = await b.ctl(['eval', 'io:format("~s", [rabbit_warren_sidecar:stats()]).']);
    const stats = JSON.parse(out.slice(0, out.lastIndexOf('}') + 1)) as { vhosts: Record<string, { store: { syncs: number; messages: number } }> };
    expect(stats.vhosts['/'].store).toMatchObject({ syncs: 0, messages: N });
    const old = b.sidecarPids();
    expect(old.length).toBe(1);
    process.kill(old[0], 'SIGKILL');
    // The plugin starts a new sidecar and RabbitMQ restarts the queue (non-clean).
    expect(await waitFor(async () => b.sidecarPids().some((p) => !old.includes(p)), 60_000)).toBe(true);
    const back = await waitFor(async () => {
      const conn = await amqp.connect(url).catch(() => undefined);
      if (!conn) return false;
      try {
        const ch = await conn.createChannel();
        ch.on('error', () => undefined);
        return (await ch.checkQueue(q)).messageCount === N;
      } catch {
        return false;
      } finally {
        await conn.close().catch(() => undefined);
      }
    }, 60_000);
    expect(back).toBe(true);
    await expectAllBack(q);
  });

  it('loses no confirmed message to a kill -9 of the whole broker right after the confirms', async () => {
    const q = 'dw-broker';
    await publishConfirmed(q);
    await b.kill();
    await b.start();
    await expectAllBack(q);
  });
});

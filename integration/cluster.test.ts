/**
 * Warren on every node of a 3-node RabbitMQ cluster of this run's series
 * (cluster.ts: own names, ports, data dirs and sidecars; one epmd and cookie;
 * joined with rabbitmqctl). A durable classic queue lives on the node that
 * declared it and is stored by that node's Warren alone, whichever nodes its
 * publishers and consumers are connected to; the node restarts cleanly and
 * after a kill -9 under load with every confirmed message, while the others
 * keep serving their queues; quorum queues and streams work beside it.
 */
import * as amqp from 'amqplib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Broker } from '../src/cli/broker';
import { Cluster } from '../src/cli/cluster';
import { freePort } from '../src/cli/ports';
import { collect, drainBodies, rabbitmqSeries, waitFor } from './harness';

jest.setTimeout(600_000);

let base: string;
let cluster: Cluster;
const conns: amqp.ChannelModel[] = [];

async function connect(i: number): Promise<amqp.ChannelModel> {
  const c = await amqp.connect(cluster.amqpUrl(i));
  c.on('error', () => undefined); // a node killed under it: the test sees it through its channels
  conns.push(c);
  return c;
}

type QueueFigures = { len: number; unacked: number; persistentCount: number };

/** The queues the node's Warren sidecar has open in vhost '/', with their figures. */
async function warrenOpen(n: Broker): Promise<Record<string, QueueFigures>> {
  const st = await n.sidecarStats<{ vhosts: Record<string, { queues: Record<string, QueueFigures> }> }>();
  return st.vhosts['/']?.queues ?? {};
}

/** The names of the queues the node's Warren sidecar has open. */
async function warrenQueues(n: Broker): Promise<string[]> {
  return Object.keys(await warrenOpen(n));
}

/** The node's Warren figures of queue `q` (its sidecar's session), or undefined if it has none open. */
async function warrenFigures(n: Broker, q: string): Promise<QueueFigures | undefined> {
  return (await warrenOpen(n))[q];
}

/** Nodes of the queue's master and of its synchronised mirrors, as `via` reports them (3.10). */
async function mirrorNodes(via: Broker, q: string): Promise<{ master: string; synced: string[] }> {
  const out = await via.ctl(['list_queues', '-q', '--no-table-headers', 'name', 'pid', 'synchronised_slave_pids']);
  const [, pid = '', synced = ''] = (out.split('\n').find((l) => l.startsWith(q + '\t')) ?? '').split('\t');
  // a pid prints as <node.creation.id.serial>: find the cluster's node names in each column
  const names = cluster.nodes.map((n) => n.nodeName);
  const on = (col: string) => names.filter((n) => col.includes(`<${n}.`));
  return { master: on(pid)[0] ?? '', synced: on(synced).sort() };
}

async function publishConfirmed(ch: amqp.ConfirmChannel, q: string, bodies: string[]): Promise<void> {
  for (const b of bodies) ch.sendToQueue(q, Buffer.from(b), { persistent: true });
  await ch.waitForConfirms();
}

beforeAll(async () => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-cluster-'));
  const ports = [];
  for (let i = 0; i < 3; i++) ports.push({ amqpPort: await freePort(), distPort: await freePort() });
  cluster = new Cluster({
    dir: base,
    rabbitmq: rabbitmqSeries(),
    ports,
    epmdPort: await freePort(),
    namePrefix: `warren-c${process.pid}`,
    sidecarArgs: ['--file-size-limit', String(256 * 1024)],
    partitionHandling: 'pause_minority',
    netTicktime: 15, // a lost peer is noticed in 11-19 s (RabbitMQ's default 60 would take up to 75)
  });
  await cluster.start();
});

afterAll(async () => {
  for (const c of conns) await c.close().catch(() => undefined);
  if (cluster) await cluster.stop().catch(async () => cluster.kill());
  fs.rmSync(base, { recursive: true, force: true });
});

it('forms a cluster of 3 nodes, each running its own Warren sidecar', async () => {
  const names = cluster.nodes.map((n) => n.nodeName).sort();
  for (const n of cluster.nodes) expect(await cluster.running(n)).toEqual(names);
  const sidecars = cluster.nodes.map((n) => n.sidecarPids());
  for (const s of sidecars) expect(s).toHaveLength(1);
  expect(new Set(sidecars.flat()).size).toBe(3);
});

it('stores a queue on the node that declared it, published through another node and consumed through the third, exact bodies and counts', async () => {
  const qs = [0, 1, 2].map((i) => `xnode-${i}`);
  for (let i = 0; i < 3; i++) {
    const ch = await (await connect(i)).createChannel();
    await ch.assertQueue(qs[i], { durable: true });
    await ch.close();
  }
  for (let i = 0; i < 3; i++) {
    const bodies = Array.from({ length: 500 }, (_, k) => `q${i}-m${k}-${'x'.repeat(k % 97)}`);
    const pub = await (await connect((i + 1) % 3)).createConfirmChannel();
    await publishConfirmed(pub, qs[i], bodies);
    // Stored by the declaring node's Warren, and by no other.
    for (let j = 0; j < 3; j++) {
      expect((await warrenQueues(cluster.nodes[j])).includes(qs[i])).toBe(i === j);
    }
    const sub = await (await connect((i + 2) % 3)).createChannel();
    const got = await collect(sub, qs[i], 500);
    expect(got.map((m) => m.content.toString())).toEqual(bodies);
    got.forEach((m) => sub.ack(m));
    await sub.close();
    await pub.deleteQueue(qs[i]);
  }
});

it("restarts a node cleanly with its queue's messages while the others keep serving theirs", async () => {
  const [a, b, c] = [0, 1, 2];
  const chB = await (await connect(b)).createConfirmChannel();
  await chB.assertQueue('restart-on-b', { durable: true });
  const kept = Array.from({ length: 300 }, (_, k) => `kept-${k}`);
  await publishConfirmed(chB, 'restart-on-b', kept);
  const chC = await (await connect(c)).createConfirmChannel();
  await chC.assertQueue('serving-on-c', { durable: true });

  await cluster.nodes[b].stop();
  // C's queue, through A, while B is down.
  const viaA = await (await connect(a)).createConfirmChannel();
  await publishConfirmed(viaA, 'serving-on-c', ['while-b-down-1', 'while-b-down-2']);
  expect(await drainBodies(chC, 'serving-on-c')).toEqual(['while-b-down-1', 'while-b-down-2']);

  await cluster.nodes[b].start();
  expect(await waitFor(async () => (await cluster.running(cluster.nodes[a])).length === 3)).toBe(true);
  const sub = await (await connect(c)).createChannel();
  expect(await drainBodies(sub, 'restart-on-b')).toEqual(kept);
  await sub.deleteQueue('restart-on-b');
  await sub.deleteQueue('serving-on-c');
});

it('brings back every confirmed message of a node killed with kill -9 under load', async () => {
  const [a, b, c] = [0, 1, 2];
  const decl = await (await connect(b)).createChannel();
  await decl.assertQueue('kill-on-b', { durable: true });
  await decl.close();
  const pubConn = await connect(a);
  const pub = await pubConn.createConfirmChannel();
  pub.on('error', () => undefined);
  // Once B is down its queue cannot take messages: 3.10 confirms what it drops, and a mandatory
  // publish comes back (basic.return, before its confirm); 4.x nacks. Stored = confirmed and not returned.
  const confirmed = new Set<string>();
  const returned = new Set<string>();
  let nacked = 0;
  pub.on('return', (m: amqp.Message) => returned.add(m.content.toString()));
  let sent = 0;
  let stop = false;
  // A publisher on A with 200 in flight, each confirm (or nack) sending the next, until B dies under it.
  let reached: () => void = () => undefined;
  const twoThousand = new Promise<void>((r) => (reached = r));
  const sendOne = (): void => {
    if (stop) return;
    const body = `load-${sent++}`;
    try {
      pub.sendToQueue('kill-on-b', Buffer.from(body), { persistent: true, mandatory: true }, (err) => {
        if (err) nacked++;
        else if (!returned.has(body)) confirmed.add(body);
        if (confirmed.size >= 2000) reached();
        sendOne();
      });
    } catch {
      stop = true; // the channel closed
    }
  };
  for (let i = 0; i < 200; i++) sendOne();
  await twoThousand;
  await cluster.nodes[b].kill();
  stop = true;
  const atKill = new Set(confirmed);
  expect(atKill.size).toBeGreaterThanOrEqual(2000);
  expect(returned.size + nacked).toBeGreaterThan(0); // the load did run on past the kill

  await cluster.nodes[b].start();
  expect(await waitFor(async () => (await cluster.running(cluster.nodes[c])).length === 3)).toBe(true);
  const sub = await (await connect(c)).createChannel();
  const back = new Set(await drainBodies(sub, 'kill-on-b'));
  const missing = [...atKill].filter((m) => !back.has(m));
  expect(missing).toEqual([]);
  await sub.deleteQueue('kill-on-b');
});

it('leaves quorum queues and streams to RabbitMQ: they replicate and serve across the nodes with Warren on every one', async () => {
  const ch = await (await connect(0)).createConfirmChannel();
  await ch.assertQueue('qq-beside-warren', { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  await ch.assertQueue('stream-beside-warren', { durable: true, arguments: { 'x-queue-type': 'stream' } });
  const bodies = Array.from({ length: 200 }, (_, k) => `r-${k}`);
  const viaB = await (await connect(1)).createConfirmChannel();
  await publishConfirmed(viaB, 'qq-beside-warren', bodies);
  await publishConfirmed(viaB, 'stream-beside-warren', bodies);

  const viaC = await (await connect(2)).createChannel();
  const qq = await collect(viaC, 'qq-beside-warren', 200);
  expect(qq.map((m) => m.content.toString())).toEqual(bodies);
  qq.forEach((m) => viaC.ack(m));
  const sc = await (await connect(2)).createChannel();
  await sc.prefetch(500);
  const streamed: string[] = [];
  await new Promise<void>((resolve, reject) => {
    sc.consume(
      'stream-beside-warren',
      (m) => {
        if (!m) return;
        streamed.push(m.content.toString());
        sc.ack(m);
        if (streamed.length === 200) resolve();
      },
      { arguments: { 'x-stream-offset': 'first' } },
    ).catch(reject);
  });
  expect(streamed).toEqual(bodies);
  // Neither is Warren's: no node's sidecar opened them.
  for (const n of cluster.nodes) {
    const open = await warrenQueues(n);
    expect(open.filter((q) => q.includes('beside-warren'))).toEqual([]);
  }
  await ch.deleteQueue('qq-beside-warren');
  await ch.deleteQueue('stream-beside-warren');
});

it('stops the whole cluster cleanly and starts it again on its data, every node in it, every queue with its messages', async () => {
  const ch = await (await connect(1)).createConfirmChannel();
  await ch.assertQueue('whole-restart', { durable: true });
  const bodies = Array.from({ length: 100 }, (_, k) => `w-${k}`);
  await publishConfirmed(ch, 'whole-restart', bodies);
  for (const c of conns.splice(0)) await c.close().catch(() => undefined);
  await cluster.stop();
  for (const n of cluster.nodes) expect(n.isRunning()).toBe(false);
  await cluster.start(); // all at once, no join: joining again would reset the nodes
  const names = cluster.nodes.map((n) => n.nodeName).sort();
  for (const n of cluster.nodes) expect(await cluster.running(n)).toEqual(names);
  const sub = await (await connect(2)).createChannel();
  expect(await drainBodies(sub, 'whole-restart')).toEqual(bodies);
  await sub.deleteQueue('whole-restart');
});

it('classic mirrored queues (3.10): master and mirrors all keep the messages in their own Warren; a mirror promoted after a kill -9 of the master loses nothing; a new mirror synchronises with messages held unacknowledged (4.x refuses mirroring)', async () => {
  const [n1, n2, n3] = cluster.nodes;
  const policy = ['set_policy', '--apply-to', 'queues', 'warren-ha', '^mirrored-', '{"ha-mode":"all","ha-sync-mode":"automatic"}'];
  if (rabbitmqSeries() !== '3.10') {
    await expect(n1.ctl(policy)).rejects.toThrow(/are not recognised policy settings/);
    return;
  }
  await n1.ctl(policy);
  const q = 'mirrored-q';
  const decl = await (await connect(0)).createChannel();
  await decl.assertQueue(q, { durable: true }); // its master on warren-1
  await decl.close();
  const bodies = Array.from({ length: 1000 }, (_, k) => `h-${k}-${'y'.repeat(k % 50)}`);
  await publishConfirmed(await (await connect(1)).createConfirmChannel(), q, bodies);
  expect(await waitFor(async () => (await mirrorNodes(n2, q)).synced.length === 2, 60_000)).toBe(true);
  expect((await mirrorNodes(n2, q)).master).toBe(n1.nodeName);
  // Every node's Warren holds the queue with all 1,000 (the master's and each mirror's own store).
  for (const n of cluster.nodes) expect(await warrenFigures(n, q)).toMatchObject({ len: 1000, unacked: 0, persistentCount: 1000 });

  // kill -9 of the master's node: a mirror takes over with every confirmed message.
  await n1.kill();
  expect(await waitFor(async () => [n2.nodeName, n3.nodeName].includes((await mirrorNodes(n3, q).catch(() => ({ master: '' }))).master), 60_000)).toBe(true);

  // 50 delivered and held unacknowledged on the new master while warren-1 comes back as a new mirror:
  // the master folds over its messages, the mirror takes the ready ones with batch_publish and the
  // held ones with batch_publish_delivered.
  const sub = await (await connect(2)).createChannel();
  const held = await collect(sub, q, 50);
  await n1.start();
  expect(await waitFor(async () => (await cluster.running(n3)).length === 3, 60_000)).toBe(true);
  expect(await waitFor(async () => (await mirrorNodes(n3, q)).synced.includes(n1.nodeName), 120_000)).toBe(true);
  expect(await waitFor(async () => (await warrenFigures(n1, q))?.len === 950, 30_000)).toBe(true);
  expect(await warrenFigures(n1, q)).toMatchObject({ len: 950, unacked: 50, persistentCount: 1000 });

  // Every message once acked: the 50 held, then the other 950.
  held.forEach((m) => sub.ack(m));
  const rest = await drainBodies(sub, q);
  expect([...held.map((m) => m.content.toString()), ...rest].sort()).toEqual([...bodies].sort());
  await sub.deleteQueue(q);
  await n1.ctl(['clear_policy', 'warren-ha']);
});

it('a node cut off from the others for 30 s: with pause_minority (3.10, 4.0) it pauses while the majority serves, on 4.3 (partition handling gone, Raft decides) it serves its own classic queues; healed, no confirmed message of any node is lost', async () => {
  const [a, , c] = cluster.nodes;
  const pauses = rabbitmqSeries() !== '4.3'; // 4.3.0's release notes: cluster_partition_handling is accepted but has no effect
  const onA = await (await connect(0)).createConfirmChannel();
  await onA.assertQueue('part-a', { durable: true });
  const onC = await (await connect(2)).createConfirmChannel();
  onC.on('error', () => undefined);
  await onC.assertQueue('part-c', { durable: true });
  const aBodies = Array.from({ length: 300 }, (_, k) => `before-${k}`);
  const cBodies = [...aBodies];
  await publishConfirmed(onA, 'part-a', aBodies);
  await publishConfirmed(onC, 'part-c', cBodies);

  const cutAt = Date.now();
  cluster.partition(2);
  try {
    // The majority notices C is gone (rabbitmqctl, from 127.0.0.1, still reaches every node).
    expect(await waitFor(async () => (await cluster.running(a)).length === 2, 90_000, 500)).toBe(true);
    if (pauses) {
      // C, in the minority, pauses: its rabbit app stops and it serves no client.
      expect(await waitFor(async () => /false/.test(await c.ctl(['eval', 'rabbit:is_running().']).catch(() => '')), 90_000, 500)).toBe(true);
      await expect(amqp.connect(cluster.amqpUrl(2))).rejects.toThrow();
    } else {
      // C runs on, and its own classic queue confirms what its clients publish: Warren on C stores it.
      expect(await c.ctl(['eval', 'rabbit:is_running().'])).toMatch(/true/);
      const during = Array.from({ length: 200 }, (_, k) => `c-during-${k}`);
      await publishConfirmed(onC, 'part-c', during);
      cBodies.push(...during);
    }
    // The majority serves its queues for the rest of the 30 s cut: a batch confirmed to A's queue, then
    // A asked who is running (C stays out while it is cut off), again and again.
    for (let batch = 0; batch === 0 || Date.now() - cutAt < 30_000; batch++) {
      const during = Array.from({ length: 100 }, (_, k) => `during-${batch}-${k}`);
      await publishConfirmed(onA, 'part-a', during);
      aBodies.push(...during);
      expect(await cluster.running(a)).not.toContain(c.nodeName);
    }
  } finally {
    cluster.heal();
  }
  // Healed: C runs and the cluster is whole, on every node.
  const names = cluster.nodes.map((n) => n.nodeName).sort();
  expect(await waitFor(async () => /true/.test(await c.ctl(['eval', 'rabbit:is_running().']).catch(() => '')), 120_000, 500)).toBe(true);
  for (const n of cluster.nodes) expect(await waitFor(async () => JSON.stringify(await cluster.running(n).catch(() => [])) === JSON.stringify(names), 120_000, 500)).toBe(true);
  // Every confirmed message of both queues, each once, in order.
  const viaC = await (await connect(2)).createChannel();
  expect(await drainBodies(viaC, 'part-a')).toEqual(aBodies);
  const viaA = await (await connect(0)).createChannel();
  expect(await drainBodies(viaA, 'part-c')).toEqual(cBodies);
  await viaA.deleteQueue('part-a');
  await viaA.deleteQueue('part-c');
});

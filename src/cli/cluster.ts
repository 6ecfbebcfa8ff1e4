/**
 * A RabbitMQ cluster of our own nodes on this machine, Warren on every node:
 * each node has its own name, ports, data directory and sidecar; they share
 * one epmd (nodes find each other through it) and one Erlang cookie, and are
 * joined with rabbitmqctl as an operator joins them (stop_app, reset,
 * join_cluster, start_app). Each node has a loopback address of its own
 * (127.0.0.11, .12, ...; its node name is `<prefix>-<i>@<address>`), so one can
 * be cut off from the others (partition(i), heal(): partition.ts) while
 * clients and rabbitmqctl, from 127.0.0.1, still reach it.
 *
 *   const c = new Cluster({ dir, size: 3, rabbitmq: '4.0', basePort: 5681 });
 *   await c.start();        // every node up and in the cluster
 *   c.nodes[1].ctl([...]);  // each node is a Broker
 *   await c.stop();         // nodes stopped cleanly (last first), then the epmd
 *
 * `<dir>/cluster.json` records the cluster, so `warren cluster stop` (another
 * process) finds its nodes again.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Broker } from './broker';
import { BrokerError } from './broker-error';
import { PluginEnv } from './node-config';
import { LoopbackPartition } from './partition';
import { isSeries, Runtime, runtimeFor, Series } from './rabbitmq';

export const CLUSTER_RECORD = 'cluster.json';

export interface ClusterNodePorts {
  amqpPort: number;
  distPort: number;
  managementPort?: number;
}

export interface ClusterOptions {
  /** Holds the nodes' data directories (node-1, node-2, ...) and the record. */
  dir: string;
  rabbitmq?: Series | Runtime;
  /** Each node's ports, in order; the cluster has as many nodes. */
  ports: ClusterNodePorts[];
  /** The shared epmd's port. */
  epmdPort: number;
  /** Node names are `<prefix>-<i>@<address>` (default warren). */
  namePrefix?: string;
  /** rabbitmq.conf's cluster_partition_handling on every node (default RabbitMQ's, ignore). */
  partitionHandling?: 'ignore' | 'pause_minority' | 'autoheal';
  /** net_ticktime (s) on every node: how soon a node notices a peer is gone (default RabbitMQ's, 60). */
  netTicktime?: number;
  /** false: the same cluster without Warren (RabbitMQ's own store), for benchmarks. */
  warren?: boolean;
  pluginEnv?: PluginEnv;
  sidecarArgs?: string[];
  startTimeoutMs?: number;
}

interface ClusterRecord {
  series: Series;
  epmdPort: number;
  cookie: string;
  namePrefix: string;
  warren: boolean;
  ports: ClusterNodePorts[];
  partitionHandling?: ClusterOptions['partitionHandling'];
  netTicktime?: number;
}

/** Node i's loopback address (0-based): 127.0.0.11, .12, ... */
export function nodeAddress(i: number): string {
  return `127.0.0.${11 + i}`;
}

export class Cluster {
  readonly nodes: Broker[];
  readonly dir: string;
  /** Owns the shared epmd (it never runs a node). */
  private readonly epmdKeeper: Broker;
  private readonly record: ClusterRecord;
  private readonly cut: LoopbackPartition;

  constructor(opts: ClusterOptions, cookie = crypto.randomBytes(20).toString('hex').toUpperCase()) {
    if (opts.ports.length < 1) throw new BrokerError('a cluster needs at least one node', 'ESTART');
    this.dir = path.resolve(opts.dir);
    const rabbitmq = typeof opts.rabbitmq === 'object' ? opts.rabbitmq : runtimeFor(opts.rabbitmq);
    const namePrefix = opts.namePrefix ?? 'warren';
    const warren = opts.warren ?? true;
    if (opts.ports.length > 200) throw new BrokerError('a cluster has at most 200 nodes (their addresses)', 'ESTART');
    this.record = { series: rabbitmq.series, epmdPort: opts.epmdPort, cookie, namePrefix, warren, ports: opts.ports, partitionHandling: opts.partitionHandling, netTicktime: opts.netTicktime };
    const addresses = opts.ports.map((_, i) => nodeAddress(i));
    this.epmdKeeper = new Broker({ dataDir: path.join(this.dir, 'epmd'), rabbitmq, epmdPort: opts.epmdPort, epmdAddresses: addresses, nodeName: `${namePrefix}-epmd@localhost` });
    this.cut = new LoopbackPartition(`warren_${namePrefix.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${opts.epmdPort}`);
    this.nodes = opts.ports.map(
      (p, i) =>
        new Broker({
          dataDir: path.join(this.dir, `node-${i + 1}`),
          rabbitmq,
          nodeName: `${namePrefix}-${i + 1}@${addresses[i]}`,
          address: addresses[i],
          partitionHandling: opts.partitionHandling,
          netTicktime: opts.netTicktime,
          amqpPort: p.amqpPort,
          distPort: p.distPort,
          managementPort: p.managementPort,
          epmdPort: opts.epmdPort,
          epmd: 'shared',
          cookie,
          warren,
          pluginEnv: opts.pluginEnv,
          sidecarArgs: opts.sidecarArgs ?? [],
          startTimeoutMs: opts.startTimeoutMs,
        }),
    );
  }

  /** The cluster `warren cluster start` (or a test) recorded in `dir`. */
  static recorded(dir: string): Cluster {
    const file = path.join(path.resolve(dir), CLUSTER_RECORD);
    let rec: ClusterRecord;
    try {
      rec = JSON.parse(fs.readFileSync(file, 'utf8')) as ClusterRecord;
    } catch (e) {
      const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist (no cluster was started with this directory)' : `cannot be read: ${(e as Error).message}`;
      throw new BrokerError(`${file} ${why}`, 'ENORECORD');
    }
    if (!isSeries(rec.series) || !Array.isArray(rec.ports) || typeof rec.cookie !== 'string') throw new BrokerError(`${file} is not a cluster record`, 'ENORECORD');
    return new Cluster(
      { dir, rabbitmq: rec.series, ports: rec.ports, epmdPort: rec.epmdPort, namePrefix: rec.namePrefix, warren: rec.warren, partitionHandling: rec.partitionHandling, netTicktime: rec.netTicktime },
      rec.cookie,
    );
  }

  amqpUrl(i: number): string {
    return `amqp://guest:guest@${this.nodes[i].address}:${this.nodes[i].amqpPort}`;
  }

  /** Cuts node i off from every other node (both ways), until heal(). */
  partition(i: number): void {
    this.cut.cut(this.nodes[i].address, this.nodes.filter((_, j) => j !== i).map((n) => n.address));
  }

  heal(): void {
    this.cut.heal();
  }

  /**
   * A new cluster: starts the epmd and the first node, then each other node
   * and joins it to the first. A cluster whose nodes have data already (it
   * ran before): starts them all at once, as RabbitMQ wants a cluster
   * restarted (a node waits for the others it knew; joining again would reset
   * it and lose its queues). Resolves once every node reports all of them
   * running. `progress` hears each step.
   */
  async start(progress: (line: string) => void = () => undefined): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    fs.writeFileSync(path.join(this.dir, CLUSTER_RECORD), JSON.stringify(this.record, null, 2) + '\n', { mode: 0o600 });
    await this.epmdKeeper.ensureEpmd();
    const known = this.nodes.filter((n) => fs.existsSync(n.nodeDir));
    if (known.length > 0) {
      if (!known.includes(this.nodes[0])) throw new BrokerError(`${this.nodes[0].nodeName} has no data in ${this.nodes[0].dataDir} but other nodes of this cluster do: remove ${this.dir} to start a new cluster`, 'ESTART');
      progress(`starting ${known.map((n) => n.nodeName).join(', ')} on their data (a restart of the cluster)`);
      await Promise.all(known.map((n) => n.start()));
      // nodes added since (--nodes): joined as a new cluster's are
      for (const n of this.nodes.filter((x) => !known.includes(x))) {
        progress(`starting ${n.nodeName} and joining it to ${this.nodes[0].nodeName}`);
        await n.start();
        await this.join(n, this.nodes[0]);
      }
      await this.awaitMembers().catch((e: Error) => {
        throw new BrokerError(`${e.message}; if the cluster's first start failed, remove ${this.dir} and start again`, 'ESTART');
      });
      return;
    }
    const [first, ...rest] = this.nodes;
    progress(`starting ${first.nodeName}`);
    await first.start();
    for (const n of rest) {
      progress(`starting ${n.nodeName} and joining it to ${first.nodeName}`);
      await n.start();
      await this.join(n, first);
    }
    await this.awaitMembers();
  }

  /** rabbitmqctl's way to join `n` to the cluster of `to`: stop_app, reset, join_cluster, start_app. */
  private async join(n: Broker, to: Broker): Promise<void> {
    await n.ctl(['stop_app']);
    await n.ctl(['reset']);
    await n.ctl(['join_cluster', to.nodeName]);
    await n.ctl(['start_app']);
    await n.ctl(['await_startup']);
  }

  /** Nodes of the cluster that `via` reports running. */
  async running(via: Broker): Promise<string[]> {
    const out = await via.ctl(['eval', 'rabbit_nodes:all_running().']);
    return [...out.matchAll(/'([^']+)'/g)].map((m) => m[1]).sort();
  }

  private async awaitMembers(timeoutMs = 60_000): Promise<void> {
    const want = this.nodes.map((n) => n.nodeName).sort();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = await Promise.all(this.nodes.map((n) => this.running(n).catch(() => [])));
      if (seen.every((s) => JSON.stringify(s) === JSON.stringify(want))) return;
      if (Date.now() > deadline) throw new BrokerError(`the cluster did not form: nodes report ${JSON.stringify(seen)}, want ${JSON.stringify(want)}`, 'ESTART');
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Stops every node cleanly (the last first, the first node last), then the epmd. */
  async stop(): Promise<void> {
    this.heal();
    for (const n of [...this.nodes].reverse()) await n.stop();
    await this.epmdKeeper.stopEpmd();
  }

  /** Kills every node and the epmd (a test's cleanup after a failure). */
  async kill(): Promise<void> {
    this.heal();
    for (const n of this.nodes) await n.kill().catch(() => undefined);
    await this.epmdKeeper.stopEpmd();
  }
}

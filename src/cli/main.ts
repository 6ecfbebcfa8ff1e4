#!/usr/bin/env node
/**
 * The `warren` command (commander parses it; each command's --help says
 * more). Exit codes mean the same for every command: see EXIT below.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { Broker } from './broker';
import { Cluster, CLUSTER_RECORD, nodeAddress } from './cluster';
import { compactVhost } from './compact';
import { DataDirError, findVhosts, sidecarUsing, VhostTarget, vhostLabel } from './data-dirs';
import { formatInspect, inspectVhost } from './inspect';
import { sidecarArgsFrom } from './node-config';
import { NodeRecordError, recordedBroker, writeNodeRecord } from './node-record';
import { progressOn } from './progress';
import { Runtime, RuntimeError, SERIES, providedRuntimes, runtimeFor } from './rabbitmq';
import { formatVerify, verifyVhost } from './verify';
import { formatSettings, SettingsFormat } from './settings-reference';
import { settings, SettingsError } from '../sidecar/settings';

/** Debian stable's RabbitMQ: what `warren start` runs unless told otherwise. */
const DEFAULT_SERIES = '4.0';

/** Exit codes of every command. */
const Exit = {
  OK: 0,
  /** verify: a problem was found (the data is not sound); ctl: rabbitmqctl's own non-zero status is passed on. */
  PROBLEMS: 1,
  /** Bad usage or input: an unknown option, a DIR that is not there or holds no Warren data, a missing node record. */
  USAGE: 2,
  /** Refused: a running sidecar has the vhost open (stop the broker first). */
  IN_USE: 3,
  /** The operation failed (an I/O error, a store that would not open, a node that did not answer). */
  FAILED: 4,
} as const;

const EXIT_HELP = `
Exit status: 0 ok (verify: sound); 1 verify found problems (ctl: rabbitmqctl's status);
2 bad usage or input; 3 refused, the store is in use by a running broker; 4 the operation failed.`;

const ENV_HELP = `
Environment:
  WARREN_PORT        AMQP port (default 5672)
  WARREN_DIST_PORT   Erlang distribution port (default WARREN_PORT + 20000)
  WARREN_EPMD_PORT   port of the node's own epmd (default WARREN_DIST_PORT + 1)
  WARREN_MANAGEMENT_PORT  the management UI on 127.0.0.1 (default WARREN_PORT + 10000, i.e. 15672)
  WARREN_METRICS_PORT  the sidecar's Prometheus endpoint on 127.0.0.1 (default WARREN_PORT + 10021, i.e. 15693)
  WARREN_PLUGIN_ENV  rabbitmq_warren settings as JSON, e.g. '{"durability": "write"}' (warren settings lists them)
  WARREN_SIDECAR_ARGS  sidecar flags, e.g. "--file-size-limit 4194304 --durability write"
  WARREN_DATA        data directory (default ./var)
  WARREN_NODE        Erlang node name (default warren@localhost)
  WARREN_RABBITMQ    RabbitMQ series (as --rabbitmq)`;

function intEnv(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (dflt > 65535) {
      process.stderr.write(`warren: ${name} defaults to ${dflt}, past the last port (WARREN_PORT is high); set ${name}\n`);
      process.exit(Exit.USAGE);
    }
    return dflt;
  }
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0 || n > 65535) {
    process.stderr.write(`warren: ${name} must be a port number, got ${JSON.stringify(v)}\n`);
    process.exit(Exit.USAGE);
  }
  return n;
}

/** Resolves with an error message if something already listens on the port (on `host`, default 127.0.0.1). */
function portBusy(port: number, host = '127.0.0.1'): Promise<string | undefined> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'EADDRINUSE' ? `port ${host}:${port} is already in use` : e.message));
    srv.listen(port, host, () => srv.close(() => resolve(undefined)));
  });
}

async function start(opts: { rabbitmq?: string }): Promise<void> {
  let rt: Runtime;
  try {
    rt = runtimeFor(opts.rabbitmq, DEFAULT_SERIES);
  } catch (e) {
    process.stderr.write(`warren: ${(e as Error).message}\n`);
    process.exit(Exit.USAGE);
  }
  const amqpPort = intEnv('WARREN_PORT', 5672);
  const distPort = intEnv('WARREN_DIST_PORT', amqpPort + 20000);
  const epmdPort = intEnv('WARREN_EPMD_PORT', distPort + 1);
  const managementPort = intEnv('WARREN_MANAGEMENT_PORT', amqpPort + 10000);
  // Next to rabbitmq_prometheus's 15692, so a scrape config finds both.
  const metricsPort = intEnv('WARREN_METRICS_PORT', amqpPort + 10021);
  const dataDir = path.resolve(process.env.WARREN_DATA ?? 'var');
  const nodeName = process.env.WARREN_NODE ?? 'warren@localhost';
  for (const [what, port, env] of [
    ['AMQP', amqpPort, 'WARREN_PORT'],
    ['distribution', distPort, 'WARREN_DIST_PORT'],
    ['management UI', managementPort, 'WARREN_MANAGEMENT_PORT'],
    ['metrics', metricsPort, 'WARREN_METRICS_PORT'],
  ] as const) {
    const busy = await portBusy(port);
    if (busy) {
      process.stderr.write(`warren: cannot start: the ${what} ${busy} (another RabbitMQ?); choose another with ${env}=...\n`);
      process.exit(1);
    }
  }
  const sidecarArgs = [...sidecarArgsFrom(undefined), '--metrics-port', String(metricsPort)];
  const broker = new Broker({ dataDir, amqpPort, distPort, epmdPort, nodeName, rabbitmq: rt, sidecarArgs, managementPort });
  process.stdout.write(`warren: starting RabbitMQ ${rt.version} node ${nodeName} with Warren (data under ${dataDir}) ...\n`);
  // Ctrl-C from here on stops the node we start: during its boot, once it is up
  // (rabbitmqctl cannot stop a node still booting); a second one kills it.
  let booted = false;
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) {
      process.stdout.write(`\nwarren: ${sig} again: killing the node\n`);
      broker.kill().then(
        () => process.exit(130),
        (e: Error) => {
          process.stderr.write(`warren: kill failed: ${e.message}\n`);
          process.exit(1);
        },
      );
      return;
    }
    stopping = true;
    if (!booted) {
      process.stdout.write(`\nwarren: ${sig}: the node stops cleanly once it has started (again to kill it) ...\n`);
      return;
    }
    process.stdout.write(`\nwarren: ${sig}: stopping the broker cleanly ...\n`);
    broker.stop().then(
      () => {
        process.stdout.write('warren: stopped cleanly; the next `npm start` finds the messages again.\n');
        process.exit(0);
      },
      (e: Error) => {
        process.stderr.write(`warren: stop failed: ${e.message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  try {
    await broker.start();
    writeNodeRecord(broker);
  } catch (e) {
    process.stderr.write(`warren: the broker did not start: ${(e as Error).message}\n`);
    process.exit(1);
  }
  booted = true;
  if (stopping) {
    stopping = false;
    stop('interrupted during the start');
    return;
  }
  const line = '─'.repeat(72);
  process.stdout.write(
    [
      line,
      ` Warren is running: RabbitMQ ${rt.version} (Erlang ${rt.erlang}) with Warren as the classic-queue store`,
      `   broker                    ${rt.root ? `Debian root ${rt.root}` : "the host's rabbitmq-server package"}`,
      `   AMQP 0-9-1 and AMQP 1.0   amqp://guest:guest@127.0.0.1:${amqpPort}`,
      `   node                      ${nodeName} (distribution port ${distPort})`,
      `   data                      ${dataDir}`,
      `   management UI             http://127.0.0.1:${managementPort}/ (guest / guest)`,
      `   Warren metrics            http://127.0.0.1:${metricsPort}/metrics (Prometheus text format)`,
      `   broker log                ${broker.logFile}`,
      `   try                       node dist/examples/producer.js 1000 && node dist/examples/consumer.js`,
      `   rabbitmqctl               npx warren ctl list_queues name messages`,
      ` Ctrl-C stops it cleanly.`,
      line,
      '',
    ].join('\n'),
  );
  const exited = await broker.exited();
  if (!stopping) {
    await broker.stopEpmd();
    process.stderr.write(`warren: the broker exited unexpectedly (${exited}); see ${broker.logFile}\n`);
    process.exit(1);
  }
}

/**
 * `warren cluster start|stop|status`: a local cluster with Warren on every
 * node (cluster.ts), its data under $WARREN_CLUSTER_DIR (default
 * ./var-cluster), AMQP on $WARREN_CLUSTER_PORT (default 5681) and the next
 * ports, returning once it is up.
 */
/** The cluster recorded in `dir`, with the exit taken when there is none. */
function recordedCluster(dir: string): Cluster {
  try {
    return Cluster.recorded(dir);
  } catch (e) {
    fail(Exit.USAGE, (e as Error).message);
  }
}

async function cluster(action: string, opts: { rabbitmq?: string; nodes: number }, arg?: string): Promise<void> {
  const dir = path.resolve(process.env.WARREN_CLUSTER_DIR ?? 'var-cluster');
  if (action === 'partition' || action === 'heal') {
    const c = recordedCluster(dir);
    if (action === 'heal') {
      c.heal();
      process.stdout.write('warren cluster: healed: every node reaches every other again\n');
      return;
    }
    const i = Number(arg) - 1;
    if (!Number.isInteger(i) || i < 0 || i >= c.nodes.length) fail(Exit.USAGE, `partition needs a node number from 1 to ${c.nodes.length}, got ${JSON.stringify(arg)}`);
    c.partition(i);
    process.stdout.write(`warren cluster: ${c.nodes[i].nodeName} is cut off from the other nodes (\`npm run cluster -- heal\` ends it)\n`);
    return;
  }
  if (action === 'stop' || action === 'status') {
    const c = recordedCluster(dir);
    if (action === 'stop') {
      for (const n of [...c.nodes].reverse()) process.stdout.write(`warren cluster: stopping ${n.nodeName}\n`);
      await c.stop();
      process.stdout.write('warren cluster: stopped cleanly\n');
      return;
    }
    for (const [i, n] of c.nodes.entries()) {
      const up = n.isRunning() ? (await c.running(n).catch(() => [])).join(', ') || 'running, not answering' : 'stopped';
      process.stdout.write(`${n.nodeName}\t${c.amqpUrl(i)}\t${up}\n`);
    }
    return;
  }
  if (action !== 'start') fail(Exit.USAGE, `unknown cluster action ${JSON.stringify(action)}: start, stop, status, partition N or heal`);
  let rt: Runtime;
  try {
    rt = runtimeFor(opts.rabbitmq, DEFAULT_SERIES);
  } catch (e) {
    fail(Exit.USAGE, (e as Error).message);
  }
  const base = intEnv('WARREN_CLUSTER_PORT', 5681);
  // node i: AMQP base+i, management base+10000+i, distribution base+20000+i (rabbitmqctl's own up to 10,010 above it)
  if (base + 30010 + opts.nodes > 65535) fail(Exit.USAGE, `WARREN_CLUSTER_PORT=${base} is too high: each node's ports reach 30,010 above it; use one below ${65535 - 30010 - opts.nodes}`);
  const ports = Array.from({ length: opts.nodes }, (_, i) => ({ amqpPort: base + i, distPort: base + 20000 + i, managementPort: base + 10000 + i }));
  const epmdPort = base + 20000 + opts.nodes;
  // A cluster recorded here that still runs is not ours to start (nor, on a failed start, to kill).
  if (fs.existsSync(path.join(dir, CLUSTER_RECORD))) {
    const running = recordedCluster(dir).nodes.filter((n) => n.isRunning());
    if (running.length > 0) fail(1, `a cluster recorded in ${dir} is running (${running.map((n) => n.nodeName).join(', ')}): \`npm run cluster -- stop\` it first`);
  }
  // each port on the address that will listen on it
  const wanted = [...ports.flatMap((p, i) => [p.amqpPort, p.distPort, p.managementPort].map((port) => [port, nodeAddress(i)] as const)), [epmdPort, '127.0.0.1'] as const];
  for (const [port, host] of wanted) {
    const busy = await portBusy(port, host);
    if (busy) fail(1, `cannot start the cluster: ${busy} (a cluster already running? \`npm run cluster -- stop\`); choose other ports with WARREN_CLUSTER_PORT=...`);
  }
  const c = new Cluster({ dir, rabbitmq: rt, ports, epmdPort, partitionHandling: 'pause_minority' });
  process.stdout.write(`warren cluster: ${opts.nodes} nodes of RabbitMQ ${rt.version} with Warren (cluster_partition_handling = pause_minority), data under ${dir}; each node on a loopback address of its own\n`);
  try {
    await c.start((line) => process.stdout.write(`warren cluster: ${line}\n`));
  } catch (e) {
    process.stderr.write(`warren cluster: the cluster did not start: ${(e as Error).message}\nstopping what started ...\n`);
    await c.kill();
    process.exit(1);
  }
  for (const [i, n] of c.nodes.entries()) {
    process.stdout.write(`${n.nodeName}  ${c.amqpUrl(i)}  management http://${n.address}:${ports[i].managementPort}/  data ${n.dataDir}\n`);
  }
  process.stdout.write(`warren cluster: up; \`npm run cluster -- stop\` stops it cleanly\n`);
}

/** The vhosts DIR names, with the exit taken on a bad DIR. */
async function targets(dir: string): Promise<VhostTarget[]> {
  try {
    return await findVhosts(dir);
  } catch (e) {
    if (e instanceof DataDirError) fail(Exit.USAGE, e.message);
    throw e;
  }
}

function fail(code: number, message: string): never {
  process.stderr.write(`warren: ${message}\n`);
  process.exit(code);
}

/** Refuses (exit 3) if a running sidecar has any of the vhosts open. */
function refuseInUse(ts: VhostTarget[], what: string): void {
  for (const t of ts) {
    const pid = sidecarUsing(t);
    if (pid !== null) fail(Exit.IN_USE, `${what} refused: ${vhostLabel(t)} (${t.warren}) is in use by the sidecar pid ${pid}; stop the broker first`);
  }
}

function dataDir(opt: string | undefined): string {
  return path.resolve(opt ?? process.env.WARREN_DATA ?? 'var');
}

function nodeBroker(opt: string | undefined): Broker {
  try {
    return recordedBroker(dataDir(opt));
  } catch (e) {
    if (e instanceof NodeRecordError || e instanceof RuntimeError) fail(Exit.USAGE, e.message);
    throw e;
  }
}

function json(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
}

async function inspect(dir: string, o: { json?: boolean; quiet?: boolean }): Promise<void> {
  const ts = await targets(dir);
  const progress = progressOn(process.stderr, 'warren inspect', o.quiet);
  const reports = [];
  for (const t of ts) {
    const r = await inspectVhost(t, sidecarUsing(t), progress);
    reports.push(r);
    if (!o.json) process.stdout.write(formatInspect(r, t));
  }
  if (o.json) json({ vhosts: reports });
}

async function verify(dir: string, o: { json?: boolean; quiet?: boolean }): Promise<void> {
  const ts = await targets(dir);
  refuseInUse(ts, 'verify');
  const progress = progressOn(process.stderr, 'warren verify', o.quiet);
  const reports = [];
  for (const t of ts) {
    const r = await verifyVhost(t, progress);
    reports.push(r);
    if (!o.json) process.stdout.write(formatVerify(r, t));
  }
  const sound = reports.every((r) => r.sound);
  if (o.json) json({ sound, vhosts: reports });
  else process.stdout.write(sound ? `warren verify: sound (${reports.length} vhost${reports.length === 1 ? '' : 's'})\n` : 'warren verify: NOT SOUND\n');
  process.exitCode = sound ? Exit.OK : Exit.PROBLEMS;
}

async function compact(dir: string, o: { json?: boolean; quiet?: boolean; fileSizeLimit?: number }): Promise<void> {
  const ts = await targets(dir);
  refuseInUse(ts, 'compact');
  const progress = progressOn(process.stderr, 'warren compact', o.quiet);
  const reports = [];
  for (const t of ts) {
    const label = vhostLabel(t);
    const log = (level: string, msg: string): void => {
      if (!o.quiet || level === 'error' || level === 'warn') process.stderr.write(`warren compact: ${label} store: ${level}: ${msg}\n`);
    };
    const r = await compactVhost(t, progress, log, { fileSizeLimit: o.fileSizeLimit });
    reports.push(r);
    if (!o.json) {
      process.stdout.write(
        `${label} (${r.dir}): opened ${r.opened}; ${r.compactions} compactions; ${r.before.files} -> ${r.after.files} files, ` +
          `${r.before.bytes} -> ${r.after.bytes} bytes (${r.reclaimedBytes} reclaimed; ${r.after.validBytes} valid); closed cleanly\n`,
      );
    }
  }
  if (o.json) json({ vhosts: reports });
}

/** rabbitmqctl against the node of `warren start`, its output and status passed through. */
function ctl(args: string[], o: { data?: string }): void {
  const b = nodeBroker(o.data);
  const c = b.ctlCommand(args);
  const child = spawn(c.file, c.args, { ...c.opts, stdio: 'inherit' });
  child.on('error', (e) => fail(Exit.FAILED, `cannot run rabbitmqctl: ${e.message}`));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? Exit.FAILED : Exit.OK)));
}

/** The running sidecar's figures (its STATS, asked through the broker: the socket is the broker's alone). */
async function stats(o: { data?: string; json?: boolean }): Promise<void> {
  const b = nodeBroker(o.data);
  let st: SidecarStats;
  try {
    st = await b.sidecarStats<SidecarStats>();
  } catch (e) {
    fail(Exit.FAILED, `the node ${b.nodeName} did not answer (is it running? \`npm start\`): ${(e as Error).message.split('\n')[0]}`);
  }
  if (o.json) return json(st);
  process.stdout.write(formatStats(st));
}

interface SidecarStats {
  pid: number;
  eventLoopDelay?: { p99Ms?: number; maxMs?: number };
  vhosts: Record<string, { dir: string; storeClean: boolean; store: Record<string, unknown>; queues: Record<string, Record<string, unknown>> }>;
}

function formatStats(st: SidecarStats): string {
  const out = [`sidecar pid ${st.pid}`];
  for (const [vhost, v] of Object.entries(st.vhosts)) {
    const s = v.store;
    out.push(
      `vhost ${JSON.stringify(vhost)}: store opened ${v.storeClean ? 'clean' : 'after a non-clean stop'}; ${String(s.messages)} messages, ${String(s.files)} files, ` +
        `${String(s.validBytes)} valid of ${String(s.fileBytes)} bytes (garbage ${((Number(s.garbageRatio) || 0) * 100).toFixed(1)}%), index ${String(s.indexKind)}; ` +
        `${String(s.compactions)} compactions (${String(s.reclaimedBytes)} bytes reclaimed), ${String(s.syncs)} fsyncs, ${String(s.checksumFailures)} checksum failures`,
    );
    for (const [name, q] of Object.entries(v.queues)) out.push(`  queue ${JSON.stringify(name)}: ${JSON.stringify(q)}`);
  }
  return out.join('\n') + '\n';
}

function program(): Command {
  const p = new Command('warren')
    .description('Warren: a persistent message store for RabbitMQ classic queues')
    .showHelpAfterError()
    .addHelpText('after', EXIT_HELP + '\n' + ENV_HELP)
    .enablePositionalOptions()
    .exitOverride();
  p.command('start')
    .description('start a RabbitMQ node with Warren as the backing store (data under ./var; AMQP 0-9-1 and 1.0 on 127.0.0.1:$WARREN_PORT, default 5672); Ctrl-C stops it cleanly')
    .addOption(new Option('--rabbitmq <series>', `which RabbitMQ (default $WARREN_RABBITMQ, else ${DEFAULT_SERIES})`).choices([...SERIES]))
    .action((o: { rabbitmq?: string }) => start(o));
  p.command('brokers')
    .description('list the RabbitMQ brokers this machine provides')
    .action(() => {
      for (const rt of providedRuntimes().values()) process.stdout.write(`${rt.series}\tRabbitMQ ${rt.version}\tErlang ${rt.erlang}\t${rt.root ?? 'host package'}\n`);
    });
  p.command('inspect')
    .description("a stopped broker's Warren data at rest: segment files (sizes, valid and garbage bytes, fragmentation), queue indexes (messages, bytes), the clean-shutdown state and what the next start trusts. Read-only")
    .argument('<dir>', "a broker's data directory (./var of npm start: every vhost in it), a vhost's directory, or a vhost's warren/ directory")
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress on stderr')
    .action(inspect);
  p.command('verify')
    .description("checksum every record and cross-check queue indexes, store and message index of a stopped broker's Warren data; exit 0 only if sound. Read-only")
    .argument('<dir>', "a broker's data directory, a vhost's directory, or a vhost's warren/ directory")
    .option('--json', 'print the report (every problem, with file and offset) as JSON')
    .option('-q, --quiet', 'no progress on stderr')
    .action(verify);
  p.command('compact')
    .description("compact a stopped broker's vhost stores offline (every pair of files that fits in one and holds garbage); refuses a store in use")
    .argument('<dir>', "a broker's data directory, a vhost's directory, or a vhost's warren/ directory")
    .option('--json', 'print the report as JSON')
    .option('-q, --quiet', 'no progress or store log on stderr (warnings and errors still)')
    .addOption(new Option('--file-size-limit <bytes>', "the broker's segment file size limit (the sidecar's --file-size-limit)").argParser(positiveInt).default(undefined, 'the plugin default, 16 MiB'))
    .action(compact);
  p.command('stats')
    .description('live figures from the running sidecar of the node `warren start` runs')
    .option('--data <dir>', 'its data directory (default $WARREN_DATA, else ./var)')
    .option('--json', 'print the figures as JSON')
    .action(stats);
  p.command('ctl')
    .description('rabbitmqctl against the node `warren start` runs, with its CLI, node name, cookie and HOME, e.g. `warren ctl list_queues name messages`')
    .option('--data <dir>', 'its data directory (default $WARREN_DATA, else ./var)')
    .argument('[args...]', 'rabbitmqctl arguments')
    .passThroughOptions()
    .allowUnknownOption()
    .helpOption(false)
    .action((args: string[], o: { data?: string }) => ctl(args, o));
  p.command('cluster')
    .description('a local RabbitMQ cluster with Warren on every node: start (returns once it is up, one line per node with its AMQP URL), stop (cleanly), status. Data under $WARREN_CLUSTER_DIR (default ./var-cluster), AMQP on $WARREN_CLUSTER_PORT (default 5681) and the next ports')
    .argument('[action]', 'start, stop, status, partition N (cut node N off from the others) or heal', 'start')
    .argument('[node]', 'with partition: the node number (1, 2, ...)')
    .addOption(new Option('--rabbitmq <series>', `which RabbitMQ (default $WARREN_RABBITMQ, else ${DEFAULT_SERIES})`).choices([...SERIES]))
    .addOption(new Option('--nodes <n>', 'how many nodes').argParser(positiveInt).default(3))
    .action((action: string, node: string | undefined, o: { rabbitmq?: string; nodes: number }) => cluster(action, o, node));
  p.command('settings')
    .description("every rabbitmq_warren setting (advanced.config: [{rabbitmq_warren, [{KEY, VALUE}, ...]}]) with its default and meaning, from plugin.json")
    .addOption(new Option('--format <format>', 'text, markdown (the README\'s reference), erlang (the plugin build\'s header) or json').choices(['text', 'markdown', 'erlang', 'json']).default('text'))
    .action((o: { format: SettingsFormat }) => {
      try {
        process.stdout.write(formatSettings(settings(), o.format));
      } catch (e) {
        if (e instanceof SettingsError) fail(Exit.USAGE, e.message);
        throw e;
      }
    });
  return p;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`${JSON.stringify(v)} is not a positive integer`);
  return n;
}

async function main(argv: string[]): Promise<void> {
  const p = program();
  try {
    await p.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version') process.exit(Exit.OK);
      process.exit(Exit.USAGE);
    }
    fail(Exit.FAILED, (e as Error).stack ?? String(e));
  }
}

void main(process.argv.slice(2));

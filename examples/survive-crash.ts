/**
 * Survive a crash: what a publisher confirm promises, shown on a real broker.
 *
 * Starts a broker of its own with `warren start` (its own data directory,
 * node name and free ports, so it never touches another broker on this
 * machine), publishes persistent messages to a durable queue with publisher
 * confirms, then kills the broker's Erlang VM and Warren's sidecar with
 * SIGKILL: no clean shutdown, nothing flushed on the way out. It starts the
 * broker again on the same data, consumes the queue, and checks that every
 * message the broker confirmed came back. Exit status 0 if all did, 1 if any
 * is missing, 2 if the demo itself failed.
 *
 *   node dist/examples/survive-crash.js [--count N] [--queue NAME] [--rabbitmq 3.10|4.0|4.3] [--data DIR] [--keep]
 *
 * The data directory is a new temporary one unless --data names one; a
 * temporary one is removed at the end unless --keep. The broker's series is
 * --rabbitmq, else $WARREN_RABBITMQ, else warren start's default.
 * It needs the build (`npm run build`): it runs dist/cli/main.js.
 *
 * It stops only what it started: the VM it kills is the one `warren ctl eval
 * 'os:getpid().'` names, and only once it checked that the process descends
 * from the `warren start` it spawned; the sidecar is that VM's child.
 */
import { ChildProcess, execFile, spawn } from 'child_process';
import * as amqp from 'amqplib';
import { Command, InvalidArgumentError } from 'commander';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';

export interface CrashDemoOptions {
  /** Messages to publish (default 1000). */
  count?: number;
  queue?: string;
  /** RabbitMQ series for `warren start --rabbitmq` (default: $WARREN_RABBITMQ, else its default). */
  rabbitmq?: string;
  /** The broker's data directory (default: a new temporary directory). */
  dataDir?: string;
  /** Keep a temporary data directory instead of removing it at the end. */
  keep?: boolean;
  /** The `warren` command's main.js (default: dist/cli/main.js of this checkout). */
  warrenMain?: string;
  log?: (line: string) => void;
  /** Stops the demo between its steps (the broker it runs is then stopped cleanly). */
  signal?: AbortSignal;
}

export interface CrashDemoResult {
  queue: string;
  dataDir: string;
  /** What the first `warren start` said it runs, e.g. "RabbitMQ 4.0.5". */
  broker: string;
  published: number;
  /** Message ids the broker confirmed before the crash. */
  confirmed: string[];
  /** The processes killed: the Erlang VM and Warren's sidecar(s). */
  killed: { vm: number; sidecars: number[] };
  /** How the first `warren start` ended after the kill (non-zero: it saw its broker die). */
  firstExit: number | null;
  /** Messages in the queue when the broker came back. */
  inQueueAfterRestart: number;
  /** Message ids consumed after the restart, in order. */
  recovered: string[];
  /** Confirmed ids that did not come back. */
  missing: string[];
  /** Ids that came back more than once. */
  duplicates: string[];
  /** Whether Warren opened the store as cleanly closed on the restart (after a kill -9: false, it recovered). */
  storeOpenedClean: boolean | undefined;
  /** How the second `warren start` ended on Ctrl-C (0: stopped cleanly). */
  finalExit: number | null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** dist/cli/main.js, from dist/examples/ (built) or examples/ (run from source). */
function defaultWarrenMain(): string {
  const candidates = [path.resolve(__dirname, '..', 'cli', 'main.js'), path.resolve(__dirname, '..', 'dist', 'cli', 'main.js')];
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) throw new Error(`no dist/cli/main.js (looked at ${candidates.join(', ')}): run npm run build first`);
  return found;
}

// --- processes, from /proc (Linux) -------------------------------------------------

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

function parentOf(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid ...: comm may hold spaces and parentheses
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

function descendsFrom(pid: number, ancestor: number): boolean {
  for (let p = parentOf(pid); p !== null && p > 1; p = parentOf(p)) if (p === ancestor) return true;
  return false;
}

function descendantsOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (/^\d+$/.test(e) && descendsFrom(Number(e), pid)) out.push(Number(e));
  }
  return out;
}

/** Resolves once none of `pids` runs (polling /proc), or rejects after `timeoutMs`. */
async function gone(pids: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(alive)) {
    if (Date.now() > deadline) throw new Error(`processes ${pids.filter(alive).join(', ')} still run`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// --- warren start and warren ctl ------------------------------------------------

interface Node {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** `warren start`, resolved once its banner says the node runs; rejects with its output if it exits first. */
function startWarren(main: string, env: NodeJS.ProcessEnv, args: string[]): Promise<Node> {
  const child = spawn(process.execPath, [main, 'start', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('Ctrl-C stops it cleanly.')) resolve({ child, output: () => out, exited });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then((code) => reject(new Error(`warren start exited (${code}) before the broker ran:\n${out}`)));
  });
}

/** `warren ARGS…` to completion; resolves with stdout, rejects on a non-zero exit. */
function warren(main: string, env: NodeJS.ProcessEnv, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [main, ...args], { env, timeout: 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`warren ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Ctrl-C, as an operator stops it: the broker stops cleanly. Resolves with the exit code. */
async function stopWarren(n: Node): Promise<number | null> {
  if (n.child.exitCode === null && n.child.signalCode === null) n.child.kill('SIGINT');
  return n.exited;
}

// --- AMQP ---------------------------------------------------------------------

/**
 * An AMQP connection whose errors surface as the failure of the operation
 * that meets them, rather than as an unhandled 'error' event.
 */
async function connect(url: string): Promise<amqp.ChannelModel> {
  const conn = await amqp.connect(url);
  conn.on('error', () => undefined);
  return conn;
}

async function declareQueue(url: string, queue: string): Promise<void> {
  const conn = await connect(url);
  try {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    await ch.assertQueue(queue, { durable: true });
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/** Publishes `count` persistent messages with confirms; resolves with the ids the broker confirmed. */
async function publish(url: string, queue: string, count: number): Promise<string[]> {
  const conn = await connect(url);
  try {
    const ch = await conn.createConfirmChannel();
    ch.on('error', () => undefined);
    const confirmed: string[] = [];
    for (let i = 1; i <= count; i++) {
      const id = `m-${i}`;
      const body = Buffer.from(`message ${i} of ${count}`);
      const ok = ch.sendToQueue(queue, body, { persistent: true, messageId: id }, (err) => {
        if (!err) confirmed.push(id);
      });
      if (!ok) await new Promise<void>((resolve) => ch.once('drain', resolve));
    }
    await ch.waitForConfirms().catch(() => undefined); // a nack leaves that id out of `confirmed`
    return confirmed;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/** Consumes (and acks) every message the queue holds; resolves with their ids and the count it started with. */
async function consumeAll(url: string, queue: string, timeoutMs = 120_000): Promise<{ inQueue: number; ids: string[] }> {
  const conn = await connect(url);
  try {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    const { messageCount } = await ch.checkQueue(queue);
    await ch.prefetch(200);
    const ids: string[] = [];
    if (messageCount > 0) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${ids.length} of ${messageCount} messages arrived`)), timeoutMs);
        conn.once('close', () => reject(new Error(`the connection closed after ${ids.length} of ${messageCount} messages`)));
        void ch.consume(queue, (m) => {
          if (!m) return;
          ids.push(String(m.properties.messageId));
          ch.ack(m);
          if (ids.length === messageCount) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
    }
    await ch.close();
    return { inQueue: messageCount, ids };
  } finally {
    await conn.close().catch(() => undefined);
  }
}

// --- the demo -------------------------------------------------------------------

export async function surviveCrash(opts: CrashDemoOptions = {}): Promise<CrashDemoResult> {
  const count = opts.count ?? 1000;
  const queue = opts.queue ?? 'warren-crash-demo';
  const log = opts.log ?? (() => undefined);
  const main = opts.warrenMain ?? defaultWarrenMain();
  const temporary = opts.dataDir === undefined;
  const dataDir = path.resolve(opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'warren-crash-demo-')));
  const amqpPort = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    WARREN_DATA: dataDir,
    WARREN_NODE: `warren-crash-demo-${process.pid}@localhost`,
    WARREN_PORT: String(amqpPort),
    WARREN_DIST_PORT: String(await freePort()),
    WARREN_EPMD_PORT: String(await freePort()),
    WARREN_MANAGEMENT_PORT: String(await freePort()),
    WARREN_METRICS_PORT: String(await freePort()),
  };
  const startArgs = opts.rabbitmq ? ['--rabbitmq', opts.rabbitmq] : [];
  const step = (): void => {
    if (opts.signal?.aborted) throw new Error('interrupted');
  };
  const url = `amqp://guest:guest@127.0.0.1:${amqpPort}`;
  let node: Node | undefined;
  let ok = false;
  try {
    log(`starting a broker with Warren: node ${env.WARREN_NODE}, AMQP on 127.0.0.1:${amqpPort}, data in ${dataDir} ...`);
    node = await startWarren(main, env, startArgs);
    step();
    const broker = /Warren is running: (RabbitMQ \S+)/.exec(node.output())?.[1] ?? 'RabbitMQ';
    log(`${broker} is up`);

    // The queue is RabbitMQ's own record (its metadata store), the messages
    // are Warren's. On 3.10 and 4.0 that store is Mnesia, whose log may not
    // have reached its files when a kill -9 lands just after a declaration:
    // the queue would be gone after the restart, confirmed messages and all.
    // (4.3 keeps it in Khepri, on disk before the declaration is answered.)
    // An application's queues are declared long before a crash; here the
    // broker is asked to write Mnesia's log out (where Mnesia does not run,
    // the call just returns an error).
    await declareQueue(url, queue);
    await warren(main, env, ['ctl', 'eval', 'catch mnesia:dump_log().']);
    const confirmed = await publish(url, queue, count);
    step();
    log(`published ${count} persistent messages to the durable queue '${queue}'; the broker confirmed ${confirmed.length}`);

    // The broker's Erlang VM, as the node itself reports it, and Warren's sidecar under it.
    const vm = Number(/\d+/.exec(await warren(main, env, ['ctl', 'eval', 'os:getpid().']))?.[0]);
    const first = node;
    if (!Number.isInteger(vm) || !alive(vm) || !descendsFrom(vm, first.child.pid!) || !/beam/.test(cmdline(vm))) {
      throw new Error(`the node's VM pid (${vm}) is not a beam process started by this demo's warren start (pid ${first.child.pid}); not killing it`);
    }
    const tree = descendantsOf(vm);
    const treeCmd = new Map(tree.map((p) => [p, cmdline(p)]));
    const sidecars = tree.filter((p) => /sidecar/.test(cmdline(p)));
    if (sidecars.length === 0) throw new Error(`no Warren sidecar under the VM (pid ${vm}): is the plugin enabled?`);
    log(`kill -9 of the Erlang VM (pid ${vm}) and Warren's sidecar (pid ${sidecars.join(', ')})`);
    for (const pid of [vm, ...sidecars]) process.kill(pid, 'SIGKILL');
    // `warren start` sees its broker die, stops the node's epmd and exits (non-zero).
    const firstExit = await first.exited;
    node = undefined;
    // The VM's other helpers (erl_child_setup, ...) end when it is gone; any
    // left after a while are ours to end (the same processes: same command line).
    await gone([vm, ...tree], 15_000).catch(() => {
      for (const p of tree) if (alive(p) && cmdline(p) === treeCmd.get(p)) process.kill(p, 'SIGKILL');
    });
    await gone([vm, ...tree], 15_000);
    step();
    log(`the broker is gone (warren start exited ${firstExit}); starting it again on the same data ...`);

    node = await startWarren(main, env, startArgs);
    step();
    const stats = JSON.parse(await warren(main, env, ['stats', '--json'])) as { vhosts?: Record<string, { storeClean?: boolean }> };
    const storeOpenedClean = stats.vhosts?.['/']?.storeClean;
    log(`back up; Warren opened its store ${storeOpenedClean === false ? 'as not closed cleanly, and recovered it' : storeOpenedClean ? 'as closed cleanly' : '(state not reported)'}`);

    const { inQueue, ids } = await consumeAll(url, queue);
    step();
    const seen = new Map<string, number>();
    for (const id of ids) seen.set(id, (seen.get(id) ?? 0) + 1);
    const missing = confirmed.filter((id) => !seen.has(id));
    const duplicates = [...seen].filter(([, c]) => c > 1).map(([id]) => id);
    log(`'${queue}' held ${inQueue} messages after the restart; consumed and acked ${ids.length}`);
    log(`${confirmed.length - missing.length} of ${confirmed.length} confirmed messages came back, ${missing.length} missing, ${duplicates.length} duplicated`);
    if (missing.length > 0) log(`missing: ${missing.slice(0, 20).join(', ')}${missing.length > 20 ? ', ...' : ''}`);

    const finalExit = await stopWarren(node);
    node = undefined;
    log(`stopped the broker cleanly (warren start exited ${finalExit})`);
    ok = true;
    return { queue, dataDir, broker, published: count, confirmed, killed: { vm, sidecars }, firstExit, inQueueAfterRestart: inQueue, recovered: ids, missing, duplicates, storeOpenedClean, finalExit };
  } finally {
    if (node) await stopWarren(node);
    if (temporary && ok && !opts.keep) {
      fs.rmSync(dataDir, { recursive: true, force: true });
      log(`removed ${dataDir}`);
    } else if (temporary) {
      log(`the broker's data stays in ${dataDir}`);
    }
  }
}

function positive(v: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError(`${JSON.stringify(v)} is not a positive count`);
  return n;
}

if (require.main === module) {
  const program = new Command('survive-crash')
    .description('publish persistent messages with confirms to a broker of its own, kill -9 it, restart it, and check every confirmed message is back')
    .option('--count <n>', 'messages to publish', positive, 1000)
    .option('--queue <name>', 'the durable queue', 'warren-crash-demo')
    .option('--rabbitmq <series>', 'RabbitMQ series: 3.10, 4.0 or 4.3 (default $WARREN_RABBITMQ, else warren start\'s default)')
    .option('--data <dir>', "the broker's data directory (default: a new temporary one)")
    .option('--keep', 'keep the temporary data directory')
    .parse(process.argv);
  const o = program.opts<{ count: number; queue: string; rabbitmq?: string; data?: string; keep?: boolean }>();
  // Ctrl-C: the demo stops at its next step, and stops its broker cleanly.
  const interrupt = new AbortController();
  process.on('SIGINT', () => {
    if (!interrupt.signal.aborted) console.error('survive-crash: interrupted; stopping the broker cleanly');
    interrupt.abort();
  });
  const log = (l: string): void => console.log(`survive-crash: ${l}`);
  surviveCrash({ count: o.count, queue: o.queue, rabbitmq: o.rabbitmq, dataDir: o.data, keep: o.keep, log, signal: interrupt.signal }).then(
    (r) => {
      if (r.missing.length === 0 && r.confirmed.length === r.published) {
        console.log(`survive-crash: every confirmed message survived the crash (${r.confirmed.length} of ${r.published})`);
      } else {
        console.error(`survive-crash: ${r.missing.length} confirmed messages were lost`);
        process.exitCode = 1;
      }
    },
    (e: Error) => {
      console.error(`survive-crash: ${e.message}`);
      process.exitCode = interrupt.signal.aborted ? 130 : 2;
    },
  );
}

/**
 * Runs our own RabbitMQ node (3.10, 4.0 or 4.3: src/cli/rabbitmq.ts) with the
 * Warren plugin built for it: its own node name, ports, epmd, cookie and data
 * directory, listening on 127.0.0.1 only, so it never touches a system-wide
 * RabbitMQ on the same machine. A broker that lives in a Debian root runs
 * there in a mount namespace of its own (scripts/in-root.sh).
 *
 *   const b = new Broker({ dataDir: '/tmp/x', amqpPort: 5673, distPort: 25673, nodeName: 'warren-x@localhost' });
 *   await b.start();          // AMQP port open and `rabbitmqctl await_startup` done
 *   await b.ctl(['list_queues']);
 *   await b.stop();           // clean stop: `rabbitmqctl stop`, waits for the VM to exit
 *   await b.kill();           // SIGKILL of the Erlang VM and of Warren's sidecar
 *
 * This file is the node's lifecycle: start (epmd, then the server, then
 * await_startup), stop, kill, wait for the exit, rabbitmqctl. Where the node's
 * files are is node-layout.ts (a Broker is its node's layout), what it runs
 * with node-config.ts, the plugin it loads plugin-build.ts.
 * A Broker object can stop, kill or inspect a node another Broker object (or
 * process) started with the same options: the node is found by name and pid file.
 */
import { ChildProcess, execFile, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BrokerError } from './broker-error';
import { PluginEnv, nodeEnv, pluginEnvFrom, sidecarArgsFrom, writeNodeConfig } from './node-config';
import { NodeLayout } from './node-layout';
import { ensurePlugin } from './plugin-build';
import { portOpen } from './ports';
import { alive, cmdlineMatches, descendants, localUser, pidFileProcess } from './proc';
import { Runtime, Series, runtimeFor } from './rabbitmq';

export interface BrokerOptions {
  /** Where the node keeps everything (created if missing, reused if present). */
  dataDir: string;
  /** AMQP 0-9-1 / 1.0 port on 127.0.0.1 (default 5672). */
  amqpPort?: number;
  /** Erlang distribution port (default amqpPort + 20000). */
  distPort?: number;
  /** With a port: rabbitmq_management is enabled, its HTTP listener on 127.0.0.1:port (default: not enabled). */
  managementPort?: number;
  /** Port of the node's own epmd (default distPort + 1). */
  epmdPort?: number;
  /**
   * `own` (default): the node's Broker starts an epmd on epmdPort and stop()
   * and kill() stop it. `shared`: the epmd on epmdPort is a cluster's, which
   * the nodes must share to find each other; it is started and stopped by
   * the cluster (ensureEpmd/stopEpmd of a Broker that owns it), never here.
   */
  epmd?: 'own' | 'shared';
  /** The node's Erlang cookie (a cluster's nodes share one). Default: a random one made at its first start. */
  cookie?: string;
  /**
   * The loopback address the node listens and connects from (AMQP, management,
   * Erlang distribution), default 127.0.0.1. Another one (a cluster's nodes
   * get 127.0.0.11, .12, ...) gives the node a long name on it
   * (`name@127.0.0.11`), so its traffic with the other nodes can be cut by
   * address (partition.ts) while clients and rabbitmqctl still reach it.
   */
  address?: string;
  /** Addresses the node's own epmd listens on besides 127.0.0.1 (a cluster's, whose nodes have their own). */
  epmdAddresses?: string[];
  /** rabbitmq.conf's cluster_partition_handling (default: RabbitMQ's, ignore). */
  partitionHandling?: 'ignore' | 'pause_minority' | 'autoheal';
  /** rabbitmq.conf's net_ticktime in seconds (default: RabbitMQ's, 60): how soon a lost peer is noticed. */
  netTicktime?: number;
  /** Which RabbitMQ (default $WARREN_RABBITMQ, else the host's own package). */
  rabbitmq?: Series | Runtime;
  /** Erlang node name (default warren@localhost). */
  nodeName?: string;
  /** How long start() waits for the node (default 120 s). */
  startTimeoutMs?: number;
  /** Extra plugin directories searched before the system ones. */
  extraPluginDirs?: string[];
  /**
   * Extra command-line flags for Warren's sidecar (e.g. ['--index', 'memory']),
   * written to advanced.config as rabbitmq_warren's sidecar_args. Default:
   * $WARREN_SIDECAR_ARGS split on spaces, else none.
   */
  sidecarArgs?: string[];
  /**
   * More rabbitmq_warren application settings for advanced.config, e.g.
   * { read_ahead: 32, sidecar_entry: '/path/main.js' }. Strings become Erlang
   * strings, numbers integers, booleans atoms, string arrays lists of strings.
   * Default: $WARREN_PLUGIN_ENV parsed as JSON, else none.
   */
  pluginEnv?: PluginEnv;
  /**
   * false: the same node without Warren, classic queues on RabbitMQ's own
   * message store (for benchmarks side by side). Default true.
   */
  warren?: boolean;
  /**
   * Run the node (and rabbitmqctl) as this local user, e.g. Debian's
   * `rabbitmq`, as an installed broker runs; the data dir is given to it.
   * Default: the current user.
   */
  user?: string;
  /**
   * Where Warren is installed for this node: a directory laid out as by
   * `stageInstall` (plugins/, dist/, node_modules/, plugin.json). Default:
   * this checkout (build/rabbitmq-<series>/plugins, dist/).
   */
  installDir?: string;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function tail(file: string, lines = 60): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines).join('\n');
  } catch {
    return `(no ${file})`;
  }
}

export class Broker extends NodeLayout {
  readonly amqpPort: number;
  readonly distPort: number;
  readonly epmdPort: number;
  private readonly sharedEpmd: boolean;
  private readonly cookie: string | undefined;
  readonly address: string;
  private readonly epmdAddresses: string[];
  private readonly partitionHandling: BrokerOptions['partitionHandling'];
  private readonly netTicktime: number | undefined;
  readonly managementPort: number | undefined;
  readonly rabbitmq: Runtime;
  private readonly startTimeoutMs: number;
  private readonly extraPluginDirs: string[];
  private readonly sidecarArgs: string[];
  private pluginEnv: PluginEnv;
  private readonly warren: boolean;
  private readonly user: { name: string; uid: number; gid: number } | undefined;
  private readonly installDir: string | undefined;
  private child: ChildProcess | null = null;
  private childExit: Promise<string> | null = null;

  constructor(opts: BrokerOptions) {
    super(opts.dataDir, opts.nodeName ?? 'warren@localhost');
    this.amqpPort = opts.amqpPort ?? 5672;
    this.distPort = opts.distPort ?? this.amqpPort + 20000;
    this.epmdPort = opts.epmdPort ?? this.distPort + 1;
    this.sharedEpmd = opts.epmd === 'shared';
    this.cookie = opts.cookie;
    this.address = opts.address ?? '127.0.0.1';
    if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(this.address)) throw new BrokerError(`address ${JSON.stringify(this.address)} is not a loopback (127.x.y.z) address`, 'ESTART');
    if (this.address !== '127.0.0.1' && !this.nodeName.endsWith(`@${this.address}`)) throw new BrokerError(`node ${this.nodeName} on ${this.address} must be named <name>@${this.address}`, 'ESTART');
    this.epmdAddresses = opts.epmdAddresses ?? [];
    this.partitionHandling = opts.partitionHandling;
    this.netTicktime = opts.netTicktime;
    this.managementPort = opts.managementPort;
    this.rabbitmq = typeof opts.rabbitmq === 'object' ? opts.rabbitmq : runtimeFor(opts.rabbitmq);
    this.startTimeoutMs = opts.startTimeoutMs ?? 120_000;
    this.extraPluginDirs = opts.extraPluginDirs ?? [];
    this.pluginEnv = pluginEnvFrom(opts.pluginEnv);
    this.sidecarArgs = sidecarArgsFrom(opts.sidecarArgs);
    this.warren = opts.warren ?? true;
    this.user = opts.user !== undefined ? { name: opts.user, ...localUser(opts.user) } : undefined;
    this.installDir = opts.installDir !== undefined ? path.resolve(opts.installDir) : undefined;
    if (this.installDir) this.pluginEnv = { sidecar_entry: path.join(this.installDir, 'dist', 'sidecar', 'main.js'), ...this.pluginEnv };
    if (!this.nodeName.includes('@')) throw new BrokerError(`node name ${JSON.stringify(this.nodeName)} needs a host part (name@localhost)`, 'ESTART');
  }

  /** The environment the server script and rabbitmqctl run with. */
  env(): NodeJS.ProcessEnv {
    const { rabbitmq, distPort, epmdPort, installDir, extraPluginDirs, address } = this;
    return nodeEnv(this, { rabbitmq, distPort, epmdPort, installDir, extraPluginDirs, address });
  }

  /**
   * How to run one of the broker's commands: as the node's user, and for a
   * broker in a Debian root inside it, seeing the data and install dirs.
   */
  private command(file: string, args: readonly string[]): { file: string; args: string[]; opts: { uid?: number; gid?: number } } {
    const binds = [this.dataDir, ...(this.installDir ? [this.installDir] : [])];
    const c = this.rabbitmq.command(file, args, { uid: this.user?.uid, gid: this.user?.gid, cwd: this.dataDir, binds });
    const opts = c.asUser && this.user ? { uid: this.user.uid, gid: this.user.gid } : {};
    return { file: c.file, args: c.args, opts };
  }

  private get epmdPidFile(): string {
    return path.join(this.dataDir, 'epmd.pid');
  }

  /** The pid of the epmd this node's Broker started, if it still runs. */
  private epmdPid(): number | null {
    return pidFileProcess(this.epmdPidFile, /epmd/);
  }

  /**
   * Every node has an epmd of its own on epmdPort, started here (the broker's
   * own epmd binary, in its root if it has one) rather than left to erl,
   * whose daemon would outlive the node and, in a root, keep its mount
   * namespace alive. stop() and kill() stop it.
   */
  async ensureEpmd(): Promise<void> {
    if (this.sharedEpmd) {
      if (!(await portOpen(this.epmdPort))) throw new BrokerError(`the shared epmd on 127.0.0.1:${this.epmdPort} is not running (the cluster starts it)`, 'ESTART');
      return;
    }
    if (this.epmdPid() !== null) return;
    fs.mkdirSync(this.logDir, { recursive: true });
    const cmd = this.command('epmd', ['-port', String(this.epmdPort), '-address', ['127.0.0.1', ...this.epmdAddresses].join(',')]);
    const out = fs.openSync(path.join(this.logDir, 'epmd.log'), 'a');
    const child = spawn(cmd.file, cmd.args, { ...cmd.opts, cwd: this.dataDir, env: this.env(), stdio: ['ignore', out, out], detached: true });
    fs.closeSync(out);
    child.unref();
    if (child.pid === undefined) throw new BrokerError('epmd did not start', 'ESTART');
    fs.writeFileSync(this.epmdPidFile, `${child.pid}\n`);
    const deadline = Date.now() + 15_000;
    while (!(await portOpen(this.epmdPort))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new BrokerError(`epmd on 127.0.0.1:${this.epmdPort} did not start (port in use?)\n${tail(path.join(this.logDir, 'epmd.log'), 10)}`, 'ESTART');
      }
      await sleep(50);
    }
  }

  /** Stops the node's epmd (stop() and kill() do; a caller whose node died on its own must). A shared one is left alone. */
  async stopEpmd(): Promise<void> {
    if (this.sharedEpmd) return;
    const pid = this.epmdPid();
    if (pid === null) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
    while (alive(pid)) await sleep(20);
    fs.rmSync(this.epmdPidFile, { force: true });
  }

  /** The pid of the running Erlang VM of this node, from its pid file, or null. */
  beamPid(): number | null {
    return pidFileProcess(this.pidFile, /beam/);
  }

  /** True if the node's VM is running (it may still be booting). */
  isRunning(): boolean {
    return this.beamPid() !== null;
  }

  /**
   * Starts the node. Resolves once the AMQP port accepts connections and
   * `rabbitmqctl await_startup` succeeded; rejects with the log tail if the
   * node exits or does not come up in time.
   */
  async start(): Promise<void> {
    const running = this.beamPid();
    if (running !== null) {
      throw new BrokerError(`node ${this.nodeName} is already running (pid ${running}, data ${this.dataDir}); stop it first`, 'ERUNNING');
    }
    if (this.warren) ensurePlugin(this.rabbitmq.series);
    const { amqpPort, managementPort, warren, sidecarArgs, pluginEnv, user, cookie, address, partitionHandling, netTicktime } = this;
    writeNodeConfig(this, { amqpPort, managementPort, warren, sidecarArgs, pluginEnv, user, cookie, address, partitionHandling, netTicktime });
    fs.rmSync(this.pidFile, { force: true });
    await this.ensureEpmd();
    const out = fs.openSync(this.consoleLogFile, 'a');
    const cmd = this.command(this.rabbitmq.bin('rabbitmq-server'), []);
    const child = spawn(cmd.file, cmd.args, {
      ...cmd.opts,
      cwd: this.dataDir,
      env: this.env(),
      stdio: ['ignore', out, out],
      detached: true, // its own process group: a Ctrl-C meant for us does not hit it
    });
    fs.closeSync(out);
    child.unref();
    this.child = child;
    this.childExit = new Promise<string>((resolve) => {
      child.once('exit', (code, signal) => resolve(signal ? `signal ${signal}` : `exit code ${code}`));
      child.once('error', (e) => resolve(`spawn error: ${e.message}`));
    });
    let exited: string | null = null;
    void this.childExit.then((why) => {
      exited = why;
    });

    const deadline = Date.now() + this.startTimeoutMs;
    const failure = (why: string) =>
      new BrokerError(
        `RabbitMQ node ${this.nodeName} did not start: ${why}\n--- ${this.logFile} (tail) ---\n${tail(this.logFile)}\n--- ${this.consoleLogFile} (tail) ---\n${tail(this.consoleLogFile, 30)}`,
        'ESTART',
      );
    while (!(await this.portOpen())) {
      if (exited !== null) throw failure(`the server exited (${exited})`);
      if (Date.now() > deadline) {
        await this.kill();
        throw failure(`no AMQP listener on ${this.address}:${this.amqpPort} after ${this.startTimeoutMs} ms`);
      }
      await sleep(250);
    }
    try {
      const left = Math.max(5, Math.ceil((deadline - Date.now()) / 1000));
      await this.ctl(['await_startup', '--timeout', String(left)], (left + 30) * 1000);
    } catch (e) {
      if (exited !== null) throw failure(`the server exited (${exited})`);
      throw failure(`await_startup failed: ${(e as Error).message}`);
    }
  }

  private portOpen(): Promise<boolean> {
    return portOpen(this.amqpPort, this.address);
  }

  /**
   * Stops the node cleanly (`rabbitmqctl stop`: queues terminate, Warren's
   * sidecar closes its stores) and waits for the VM to exit. Resolves at once
   * if the node is not running.
   */
  async stop(timeoutMs = 120_000): Promise<void> {
    const pid = this.beamPid();
    if (pid === null) {
      await this.childExited();
      await this.stopEpmd();
      return;
    }
    try {
      await this.ctl(['stop'], timeoutMs);
    } catch (e) {
      if (alive(pid)) throw new BrokerError(`rabbitmqctl stop failed: ${(e as Error).message}`, 'ESTOP');
    }
    const deadline = Date.now() + timeoutMs;
    while (alive(pid)) {
      if (Date.now() > deadline) throw new BrokerError(`node ${this.nodeName} (pid ${pid}) still running ${timeoutMs} ms after stop`, 'ESTOP');
      await sleep(100);
    }
    await this.childExited();
    await this.stopEpmd();
  }

  /**
   * Waits for the exit event of the server process this object started.
   * start() unrefs that process so that tests can exit; whoever waits for it
   * must keep this process alive meanwhile, or node may exit silently (code
   * 0) in the middle of the wait.
   */
  private async childExited(): Promise<string | undefined> {
    if (!this.childExit) return undefined;
    this.child?.ref();
    return this.childExit;
  }

  /**
   * SIGKILL of the Erlang VM and of every process under it (Warren's
   * sidecar) and of its epmd: a crash, nothing is written cleanly. Resolves
   * once they are gone. With `vmOnly`, only the VM is killed: the processes
   * under it see their pipes close and end on their own (the sidecar exits
   * without writing clean state, possibly in the middle of a write).
   */
  async kill(vmOnly = false): Promise<void> {
    let pid = this.beamPid();
    // No pid file: ask the node, but only if its epmd runs (without it the
    // node cannot be up, and rabbitmqctl would start a stray epmd).
    if (pid === null && (await portOpen(this.epmdPort))) {
      try {
        const out = await this.ctl(['eval', 'os:getpid().'], 15_000);
        const n = Number(out.trim().replace(/"/g, ''));
        if (Number.isInteger(n) && n > 0) pid = n;
      } catch {
        // not running
      }
    }
    if (pid === null) return this.stopEpmd();
    const all = [pid, ...descendants(pid)];
    for (const p of vmOnly ? [pid] : all) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    const deadline = Date.now() + 30_000;
    while (all.some(alive) && Date.now() < deadline) await sleep(50);
    const left = all.filter(alive);
    if (left.length > 0) throw new Error(`${this.nodeName}: processes ${left.join(', ')} still run 30 s after the VM was killed`);
    if (this.childExit) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.childExit, new Promise<void>((r) => (timer = setTimeout(r, 5000)))]);
      clearTimeout(timer);
    }
    await this.stopEpmd();
  }

  /**
   * The running sidecar's figures (rabbit_warren_sidecar:stats(), asked
   * through the broker: the sidecar's socket is the broker's alone), parsed.
   */
  async sidecarStats<T = Record<string, unknown>>(timeoutMs = 60_000): Promise<T> {
    const out = await this.ctl(['eval', 'io:put_chars(rabbit_warren_sidecar:stats()), io:nl(), ok.'], timeoutMs);
    const line = out.split('\n').find((l) => l.startsWith('{'));
    if (!line) throw new BrokerError(`${this.nodeName} answered no sidecar figures: ${out.trim().slice(0, 200)}`, 'ECTL');
    return JSON.parse(line) as T;
  }

  /** Pids of Warren's sidecar processes (node children of the VM's port helper). */
  sidecarPids(): number[] {
    const pid = this.beamPid();
    if (pid === null) return [];
    return descendants(pid).filter((p) => cmdlineMatches(p, /sidecar/));
  }

  /**
   * How to run `rabbitmqctl -n <node> <args>` against this node: the broker's
   * own CLI (in its root, if it has one), as the node's user, with the node's
   * HOME (so its cookie) and environment.
   */
  ctlCommand(args: readonly string[]): { file: string; args: string[]; opts: { uid?: number; gid?: number; env: NodeJS.ProcessEnv; cwd: string } } {
    const cmd = this.command(this.rabbitmq.bin('rabbitmqctl'), ['-n', this.nodeName, ...args]);
    return { file: cmd.file, args: cmd.args, opts: { ...cmd.opts, env: this.env(), cwd: this.dataDir } };
  }

  /** Runs `rabbitmqctl -n <node> <args>` with this node's environment; resolves with stdout. */
  ctl(args: readonly string[], timeoutMs = 120_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const cmd = this.ctlCommand(args);
      execFile(
        cmd.file,
        cmd.args,
        { ...cmd.opts, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
        (err, stdout, stderr) => {
          if (err) {
            reject(new BrokerError(`rabbitmqctl ${args.join(' ')}: ${err.message.split('\n')[0]}\n${stderr || stdout}`.trim(), 'ECTL'));
          } else {
            resolve(stdout);
          }
        },
      );
    });
  }

  /**
   * Resolves when the node exits, with a short description. For a node this
   * object did not start, polls its pid.
   */
  async exited(): Promise<string> {
    const why = await this.childExited();
    if (why !== undefined) return why;
    const pid = this.beamPid();
    if (pid === null) return 'not running';
    while (alive(pid)) await sleep(500);
    return `pid ${pid} exited`;
  }
}

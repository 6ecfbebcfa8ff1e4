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
 * Everything lives under `dataDir`:
 *   etc/       rabbitmq.conf, advanced.config, enabled_plugins, rabbitmq-env.conf (empty)
 *   home/      HOME of the node and of rabbitmqctl, with its own .erlang.cookie (0400)
 *   mnesia/    RABBITMQ_MNESIA_BASE (the node's dir is mnesia/<nodeName>)
 *   log/       RABBITMQ_LOG_BASE; the node log is log/<nodeName>.log, the
 *              server script's own output log/<nodeName>-console.log
 * A Broker object can stop, kill or inspect a node another Broker object (or
 * process) started with the same options: the node is found by name and pid file.
 */
import { ChildProcess, execFile, spawn, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { Runtime, Series, runtimeFor } from './rabbitmq';

export interface BrokerOptions {
  /** Where the node keeps everything (created if missing, reused if present). */
  dataDir: string;
  /** AMQP 0-9-1 / 1.0 port on 127.0.0.1 (default 5672). */
  amqpPort?: number;
  /** Erlang distribution port (default amqpPort + 20000). */
  distPort?: number;
  /** Port of the node's own epmd (default distPort + 1). */
  epmdPort?: number;
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
  pluginEnv?: Record<string, string | number | boolean | string[]>;
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

/** uid and gid of a local user, from /etc/passwd. */
export function localUser(name: string): { uid: number; gid: number; home: string } {
  for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 7) return { uid: Number(f[2]), gid: Number(f[3]), home: f[5] };
  }
  throw new BrokerError(`no local user ${JSON.stringify(name)} (is rabbitmq-server installed?)`, 'ESTART');
}

/**
 * Installs Warren's runtime (the built plugin, dist/, plugin.json and the
 * production npm packages) into `dest`, readable by every user, as an
 * operator would install it for a broker that runs as its own user. Returns
 * `dest`. The plugin's sidecar_entry must then point into it (Broker's
 * `installDir` does that).
 */
export function stageInstall(dest: string, series: Series): string {
  const root = repoRoot();
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'plugin.json'), 'utf8')) as { name: string; version: string };
  const plugin = `${manifest.name}-${manifest.version}`;
  fs.mkdirSync(dest, { recursive: true });
  fs.cpSync(path.join(pluginBuildDir(series), plugin), path.join(dest, 'plugins', plugin), { recursive: true });
  fs.cpSync(path.join(root, 'dist'), path.join(dest, 'dist'), { recursive: true });
  for (const f of ['plugin.json', 'package.json']) fs.copyFileSync(path.join(root, f), path.join(dest, f));
  const r = spawnSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new BrokerError(`npm ls failed: ${r.stderr}`, 'EBUILD');
  for (const dir of r.stdout.split('\n').filter((d) => d.startsWith(path.join(root, 'node_modules') + path.sep))) {
    fs.cpSync(dir, path.join(dest, path.relative(root, dir)), { recursive: true });
  }
  spawnSync('chmod', ['-R', 'a+rX', dest]);
  for (let d = dest; d !== path.dirname(d); d = path.dirname(d)) fs.chmodSync(d, fs.statSync(d).mode | 0o111);
  return dest;
}

function erlTerm(v: string | number | boolean | string[]): string {
  if (Array.isArray(v)) return `[${v.map((x) => erlTerm(x)).join(', ')}]`;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new BrokerError(`plugin setting ${v} is not an integer`, 'ESTART');
    return String(v);
  }
  return JSON.stringify(v);
}

export class BrokerError extends Error {
  constructor(
    message: string,
    readonly code: 'ESTART' | 'ESTOP' | 'ECTL' | 'ERUNNING' | 'EBUILD',
  ) {
    super(message);
    this.name = 'BrokerError';
  }
}

/** Where scripts/build-plugin.sh puts the plugin built for a series. */
export function pluginBuildDir(series: Series): string {
  return path.join(repoRoot(), 'build', `rabbitmq-${series}`, 'plugins');
}

/** The repository root: the nearest directory above this file with plugin.json. */
export function repoRoot(from: string = __dirname): string {
  let dir = from;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'plugin.json')) && fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new BrokerError(`no plugin.json above ${from}`, 'EBUILD');
    dir = up;
  }
}

/** A TCP port on 127.0.0.1 that is free right now (for a node's listeners in tests and benchmarks). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isBeam(pid: number): boolean {
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /beam/.test(cmd);
  } catch {
    return false;
  }
}

/** Every descendant of `pid` (via /proc), deepest last. */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      // pid (comm) state ppid ...; comm may contain spaces and parentheses
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(e));
      children.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

function tail(file: string, lines = 60): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines).join('\n');
  } catch {
    return `(no ${file})`;
  }
}

/** base36 of md5(vhost), upper case: RabbitMQ's per-vhost directory name. */
export function vhostDirName(vhost: string): string {
  const hex = crypto.createHash('md5').update(vhost, 'utf8').digest('hex');
  return BigInt('0x' + hex).toString(36).toUpperCase();
}

export class Broker {
  readonly dataDir: string;
  readonly amqpPort: number;
  readonly distPort: number;
  readonly epmdPort: number;
  readonly nodeName: string;
  readonly rabbitmq: Runtime;
  private readonly startTimeoutMs: number;
  private readonly extraPluginDirs: string[];
  private readonly sidecarArgs: string[];
  private pluginEnv: Record<string, string | number | boolean | string[]>;
  private readonly warren: boolean;
  private readonly user: { name: string; uid: number; gid: number } | undefined;
  private readonly installDir: string | undefined;
  private child: ChildProcess | null = null;
  private childExit: Promise<string> | null = null;

  constructor(opts: BrokerOptions) {
    this.dataDir = path.resolve(opts.dataDir);
    this.amqpPort = opts.amqpPort ?? 5672;
    this.distPort = opts.distPort ?? this.amqpPort + 20000;
    this.epmdPort = opts.epmdPort ?? this.distPort + 1;
    this.rabbitmq = typeof opts.rabbitmq === 'object' ? opts.rabbitmq : runtimeFor(opts.rabbitmq);
    this.nodeName = opts.nodeName ?? 'warren@localhost';
    this.startTimeoutMs = opts.startTimeoutMs ?? 120_000;
    this.extraPluginDirs = opts.extraPluginDirs ?? [];
    this.pluginEnv = opts.pluginEnv ?? (process.env.WARREN_PLUGIN_ENV ? (JSON.parse(process.env.WARREN_PLUGIN_ENV) as Record<string, string | number | boolean | string[]>) : {});
    for (const k of Object.keys(this.pluginEnv)) {
      if (!/^[a-z][a-z0-9_]*$/.test(k)) throw new BrokerError(`plugin setting name ${JSON.stringify(k)} is not an Erlang atom`, 'ESTART');
    }
    this.sidecarArgs = opts.sidecarArgs ?? (process.env.WARREN_SIDECAR_ARGS ?? '').split(/\s+/).filter((a) => a !== '');
    this.warren = opts.warren ?? true;
    this.user = opts.user !== undefined ? { name: opts.user, ...localUser(opts.user) } : undefined;
    this.installDir = opts.installDir !== undefined ? path.resolve(opts.installDir) : undefined;
    if (this.installDir) this.pluginEnv = { sidecar_entry: path.join(this.installDir, 'dist', 'sidecar', 'main.js'), ...this.pluginEnv };
    if (!this.nodeName.includes('@')) throw new BrokerError(`node name ${JSON.stringify(this.nodeName)} needs a host part (name@localhost)`, 'ESTART');
  }

  get etcDir(): string {
    return path.join(this.dataDir, 'etc');
  }
  get homeDir(): string {
    return path.join(this.dataDir, 'home');
  }
  get logDir(): string {
    return path.join(this.dataDir, 'log');
  }
  /** The node's own log file (RABBITMQ_LOGS); Warren's and the sidecar's lines are in it. */
  get logFile(): string {
    return path.join(this.logDir, `${this.nodeName}.log`);
  }
  /**
   * The node log's error entries (an entry is a timestamped line and the
   * untimestamped lines after it), at most `maxLines` lines in all: what a
   * test run prints so that a failure on a machine whose data dir is gone can
   * still be explained.
   */
  errorEntries(maxLines = 200): string[] {
    let text: string;
    try {
      text = fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return [];
    }
    const out: string[] = [];
    let inError = false;
    for (const line of text.split('\n')) {
      if (/^\d{4}-\d\d-\d\d[ T]/.test(line)) inError = / \[error\] /.test(line);
      if (inError && line.length) out.push(line);
      if (out.length >= maxLines) break;
    }
    return out;
  }
  /** stdout/stderr of the server script (early boot failures land here). */
  get consoleLogFile(): string {
    return path.join(this.logDir, `${this.nodeName}-console.log`);
  }
  get mnesiaBase(): string {
    return path.join(this.dataDir, 'mnesia');
  }
  /** The node's data dir (RABBITMQ_MNESIA_DIR). */
  get nodeDir(): string {
    return path.join(this.mnesiaBase, this.nodeName);
  }
  get pidFile(): string {
    return path.join(this.dataDir, `${this.nodeName}.pid`);
  }
  /** rabbit_vhost:msg_store_dir_path(VHost): Warren keeps the vhost's files in <this>/warren. */
  msgStoreDir(vhost = '/'): string {
    return path.join(this.nodeDir, 'msg_stores', 'vhosts', vhostDirName(vhost));
  }
  /** Warren's directory for a vhost (segment files, index, queue journals). */
  warrenDir(vhost = '/'): string {
    return path.join(this.msgStoreDir(vhost), 'warren');
  }

  /** The environment the server script and rabbitmqctl run with. */
  env(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (!k.startsWith('RABBITMQ_') && !k.startsWith('ERL_')) env[k] = v;
    }
    // A host file a Debian root does not have: node (the sidecar) would warn at every start.
    if (this.rabbitmq.root && env.NODE_EXTRA_CA_CERTS && !fs.existsSync(this.rabbitmq.hostPath(env.NODE_EXTRA_CA_CERTS))) delete env.NODE_EXTRA_CA_CERTS;
    const ours = this.installDir ? path.join(this.installDir, 'plugins') : pluginBuildDir(this.rabbitmq.series);
    const pluginDirs = [...this.extraPluginDirs, ours, ...this.rabbitmq.systemPluginDirs()];
    Object.assign(env, {
      HOME: this.homeDir,
      RABBITMQ_NODENAME: this.nodeName,
      RABBITMQ_BASE: this.dataDir,
      RABBITMQ_CONF_ENV_FILE: path.join(this.etcDir, 'rabbitmq-env.conf'),
      RABBITMQ_CONFIG_FILE: path.join(this.etcDir, 'rabbitmq.conf'),
      RABBITMQ_ADVANCED_CONFIG_FILE: path.join(this.etcDir, 'advanced.config'),
      RABBITMQ_ENABLED_PLUGINS_FILE: path.join(this.etcDir, 'enabled_plugins'),
      RABBITMQ_PLUGINS_DIR: pluginDirs.join(':'),
      RABBITMQ_MNESIA_BASE: this.mnesiaBase,
      RABBITMQ_MNESIA_DIR: this.nodeDir,
      RABBITMQ_LOG_BASE: this.logDir,
      RABBITMQ_LOGS: this.logFile,
      RABBITMQ_PID_FILE: this.pidFile,
      RABBITMQ_DIST_PORT: String(this.distPort),
      RABBITMQ_CTL_DIST_PORT_MIN: String(this.distPort + 10000),
      RABBITMQ_CTL_DIST_PORT_MAX: String(this.distPort + 10010),
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
      ERL_EPMD_PORT: String(this.epmdPort),
      ERL_EPMD_ADDRESS: '127.0.0.1',
    });
    return env;
  }

  /** Writes the node's configuration (every start: ports or paths may have changed). */
  private writeConfig(): void {
    for (const d of [this.dataDir, this.etcDir, this.homeDir, this.logDir, this.mnesiaBase]) fs.mkdirSync(d, { recursive: true });
    const write = (file: string, text: string) => {
      const p = path.join(this.etcDir, file);
      if (!fs.existsSync(p) || fs.readFileSync(p, 'utf8') !== text) fs.writeFileSync(p, text);
    };
    write(
      'rabbitmq.conf',
      [
        '# Written by Warren (src/cli/broker.ts); rewritten at every start.',
        `listeners.tcp.default = 127.0.0.1:${this.amqpPort}`,
        'listeners.ssl = none',
        'loopback_users.guest = true',
        'log.console = false',
        'log.file.level = info',
        '',
      ].join('\n'),
    );
    write(
      'advanced.config',
      this.warren
        ? [
            '%% Written by Warren (src/cli/broker.ts): classic queues use Warren as their backing queue',
            '%% (RabbitMQ\'s priority-queue wrapper stays on top of it).',
            '[{rabbit, [{backing_queue_module, rabbit_warren_bq}]},',
            ` {rabbitmq_warren, [${Object.entries({ sidecar_args: this.sidecarArgs, ...this.pluginEnv })
              .map(([k, v]) => `{${k}, ${erlTerm(v)}}`)
              .join(', ')}]}].`,
            '',
          ].join('\n')
        : '%% Written by Warren (src/cli/broker.ts): Warren is off; classic queues use RabbitMQ\'s own store.\n[].\n',
    );
    write('enabled_plugins', this.warren ? '[rabbitmq_amqp1_0,rabbitmq_warren].\n' : '[rabbitmq_amqp1_0].\n');
    write('rabbitmq-env.conf', '# Intentionally empty: Warren sets the environment itself.\n');
    const cookie = path.join(this.homeDir, '.erlang.cookie');
    if (!fs.existsSync(cookie)) {
      fs.writeFileSync(cookie, crypto.randomBytes(20).toString('hex').toUpperCase(), { mode: 0o400 });
    }
    fs.chmodSync(cookie, 0o400);
    if (this.user) {
      // The node's user owns everything it keeps; a mkdtemp parent (0700, root's) must let it in.
      spawnSync('chown', ['-R', `${this.user.uid}:${this.user.gid}`, this.dataDir]);
      fs.chmodSync(this.dataDir, 0o755);
    }
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
    try {
      const pid = Number(fs.readFileSync(this.epmdPidFile, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && alive(pid) && /epmd/.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'))) return pid;
    } catch {
      // none
    }
    return null;
  }

  /**
   * Every node has an epmd of its own on epmdPort, started here (the broker's
   * own epmd binary, in its root if it has one) rather than left to erl,
   * whose daemon would outlive the node and, in a root, keep its mount
   * namespace alive. stop() and kill() stop it.
   */
  private async startEpmd(): Promise<void> {
    if (this.epmdPid() !== null) return;
    const cmd = this.command('epmd', ['-port', String(this.epmdPort), '-address', '127.0.0.1']);
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

  /** Stops the node's epmd (stop() and kill() do; a caller whose node died on its own must). */
  async stopEpmd(): Promise<void> {
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

  /** Builds the Erlang plugin if it is missing or older than its sources. */
  private ensurePlugin(): void {
    const root = repoRoot();
    const manifest = JSON.parse(fs.readFileSync(path.join(root, 'plugin.json'), 'utf8')) as { name: string; version: string; sidecar?: { entry?: string } };
    const app = path.join(pluginBuildDir(this.rabbitmq.series), `${manifest.name}-${manifest.version}`, 'ebin', `${manifest.name}.app`);
    const srcDirs = [path.join(root, 'rabbitmq', 'src'), path.join(root, 'rabbitmq', 'include')];
    const appTime = fs.existsSync(app) ? fs.statSync(app).mtimeMs : 0;
    const stale =
      appTime === 0 ||
      srcDirs.some((d) => fs.existsSync(d) && fs.readdirSync(d).some((f) => fs.statSync(path.join(d, f)).mtimeMs > appTime)) ||
      fs.statSync(path.join(root, 'plugin.json')).mtimeMs > appTime;
    if (stale) {
      const r = spawnSync('bash', [path.join(root, 'scripts', 'build-plugin.sh'), this.rabbitmq.series], { cwd: root, encoding: 'utf8' });
      if (r.status !== 0) throw new BrokerError(`building the plugin failed:\n${r.stdout}${r.stderr}`, 'EBUILD');
      // build-plugin.sh leaves the .app untouched when nothing changed
      if (fs.existsSync(app)) fs.utimesSync(app, new Date(), new Date());
    }
    const entry = path.join(root, manifest.sidecar?.entry ?? 'dist/sidecar/main.js');
    if (!fs.existsSync(entry)) throw new BrokerError(`the sidecar ${entry} is not built: run npm run build`, 'EBUILD');
  }

  /** The pid of the running Erlang VM of this node, from its pid file, or null. */
  beamPid(): number | null {
    try {
      const pid = Number(fs.readFileSync(this.pidFile, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && alive(pid) && isBeam(pid)) return pid;
    } catch {
      // no pid file
    }
    return null;
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
    if (this.warren) this.ensurePlugin();
    this.writeConfig();
    fs.rmSync(this.pidFile, { force: true });
    await this.startEpmd();
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
        throw failure(`no AMQP listener on 127.0.0.1:${this.amqpPort} after ${this.startTimeoutMs} ms`);
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
    return portOpen(this.amqpPort);
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

  /** Pids of Warren's sidecar processes (node children of the VM's port helper). */
  sidecarPids(): number[] {
    const pid = this.beamPid();
    if (pid === null) return [];
    return descendants(pid).filter((p) => {
      try {
        return /sidecar/.test(fs.readFileSync(`/proc/${p}/cmdline`, 'utf8'));
      } catch {
        return false;
      }
    });
  }

  /** Runs `rabbitmqctl -n <node> <args>` with this node's environment; resolves with stdout. */
  ctl(args: readonly string[], timeoutMs = 120_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const cmd = this.command(this.rabbitmq.bin('rabbitmqctl'), ['-n', this.nodeName, ...args]);
      execFile(
        cmd.file,
        cmd.args,
        { ...cmd.opts, env: this.env(), cwd: this.dataDir, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
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

/**
 * The RabbitMQ brokers this machine provides (scripts/lib/brokers.sh,
 * scripts/provision-brokers.sh): the host's own package natively, other
 * series inside a cached Debian root. A Runtime says which broker it is and
 * how to run one of its commands (rabbitmq-server, rabbitmqctl, epmd) so that
 * it sees the broker's own files: directly, or through scripts/in-root.sh.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { dirAbove } from './repo';

export const SERIES = ['3.10', '4.0', '4.3'] as const;
export type Series = (typeof SERIES)[number];

const SUITE: Record<Series, string> = { '3.10': 'bookworm', '4.0': 'trixie', '4.3': 'testing' };
const ROOT_MARKER = '.warren-root';
const RMQ_HOME = '/usr/lib/rabbitmq';

export function isSeries(s: string): s is Series {
  return (SERIES as readonly string[]).includes(s);
}

/** 4.0.5 -> 4.0 */
export function seriesOf(version: string): string {
  const [major, minor] = version.split(/[.-]/);
  return `${major}.${minor}`;
}

export interface Runtime {
  series: Series;
  /** The exact RabbitMQ version, e.g. 4.0.5. */
  version: string;
  /** The exact Erlang/OTP version, e.g. 27.3.4.1. */
  erlang: string;
  /** The Debian root it runs in, or undefined when it is the host's own package. */
  root: string | undefined;
  /** A path of the broker's file system as the host sees it. */
  hostPath(p: string): string;
  /**
   * The executable and arguments that run `cmd args` as the broker sees
   * things; `binds` are host directories it must see at the same path.
   */
  command(cmd: string, args: readonly string[], opts: { uid?: number; gid?: number; cwd?: string; binds?: readonly string[] }): { file: string; args: string[]; asUser: boolean };
  /** rabbitmq-server, rabbitmqctl, ... */
  bin(name: string): string;
  /** The broker's own plugin directories. */
  systemPluginDirs(): string[];
}

export class RuntimeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RuntimeError';
  }
}

function rootsDir(): string {
  return process.env.WARREN_ROOTS || '/var/cache/warren/roots';
}

function hostVersion(): string | undefined {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Version}', 'rabbitmq-server'], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout.trim()) return undefined;
  if (!fs.existsSync(path.join(RMQ_HOME, 'bin', 'rabbitmq-server'))) return undefined;
  return r.stdout.trim().replace(/-.*$/, '');
}

function otpVersion(prefix: string): string {
  const releases = path.join(prefix, 'usr/lib/erlang/releases');
  try {
    for (const rel of fs.readdirSync(releases)) {
      const f = path.join(releases, rel, 'OTP_VERSION');
      if (fs.existsSync(f)) return fs.readFileSync(f, 'utf8').trim();
    }
  } catch {
    // no Erlang
  }
  return 'unknown';
}

function repoScript(name: string): string {
  // dist/cli/rabbitmq.js or src/cli/rabbitmq.ts -> <repo>/scripts/<name>
  const dir = dirAbove(__dirname, (d) => fs.existsSync(path.join(d, 'scripts', name)));
  if (dir === undefined) throw new RuntimeError(`scripts/${name} not found above ${__dirname}`);
  return path.join(dir, 'scripts', name);
}

function makeRuntime(series: Series, version: string, erlang: string, root: string | undefined): Runtime {
  const hostPath = (p: string) => (root ? path.join(root, p) : p);
  return {
    series,
    version,
    erlang,
    root,
    hostPath,
    bin: (name) => path.join(RMQ_HOME, 'bin', name),
    systemPluginDirs: () =>
      [path.join(RMQ_HOME, 'plugins'), path.join(RMQ_HOME, 'lib', `rabbitmq_server-${version}`, 'plugins')].filter((d) => fs.existsSync(hostPath(d))),
    command(cmd, args, opts) {
      if (!root) return { file: cmd, args: [...args], asUser: true };
      const wrapped: string[] = [series];
      if (opts.uid !== undefined) wrapped.push('--user', `${opts.uid}:${opts.gid ?? opts.uid}`);
      if (opts.cwd) wrapped.push('--cwd', opts.cwd);
      for (const b of opts.binds ?? []) wrapped.push('--bind', b);
      return { file: repoScript('in-root.sh'), args: [...wrapped, '--', cmd, ...args], asUser: false };
    },
  };
}

/** Every broker this machine provides, by series (those it cannot provide are absent). */
export function providedRuntimes(): Map<Series, Runtime> {
  const out = new Map<Series, Runtime>();
  const host = hostVersion();
  if (host && isSeries(seriesOf(host))) out.set(seriesOf(host) as Series, makeRuntime(seriesOf(host) as Series, host, otpVersion('/'), undefined));
  for (const series of SERIES) {
    if (out.has(series)) continue;
    const root = path.join(rootsDir(), SUITE[series]);
    let marker: string;
    try {
      marker = fs.readFileSync(path.join(root, ROOT_MARKER), 'utf8');
    } catch {
      continue;
    }
    const facts = new Map(marker.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as [string, string]));
    const version = facts.get('rabbitmq');
    if (version && seriesOf(version) === series) out.set(series, makeRuntime(series, version, facts.get('erlang') ?? 'unknown', root));
  }
  return out;
}

/** The series of the host's own broker, if it has a supported one. */
export function hostSeries(): Series | undefined {
  const v = hostVersion();
  return v && isSeries(seriesOf(v)) ? (seriesOf(v) as Series) : undefined;
}

/**
 * The broker for `series` (default $WARREN_RABBITMQ, else `dflt`, else the
 * host's own). Throws a RuntimeError that says what is provided if it is not.
 */
export function runtimeFor(series?: string, dflt?: Series): Runtime {
  const wanted = series || process.env.WARREN_RABBITMQ || dflt || hostSeries();
  const provided = providedRuntimes();
  const have = [...provided.values()].map((r) => `${r.series} (${r.version})`).join(', ') || 'none';
  if (!wanted) throw new RuntimeError(`no RabbitMQ broker is installed; run npm run setup (provided: ${have})`);
  if (!isSeries(wanted)) throw new RuntimeError(`RabbitMQ ${JSON.stringify(wanted)} is not a supported series (supported: ${SERIES.join(', ')})`);
  const rt = provided.get(wanted);
  if (!rt) throw new RuntimeError(`RabbitMQ ${wanted} is not provided on this machine (provided: ${have}); npm run setup builds it`);
  return rt;
}

/**
 * A node run the way a user runs it: `warren start` (what `npm start` runs)
 * as a child process with its own data dir, ports and node name, on this
 * run's RabbitMQ series; and the `warren` command beside it. Tests that need
 * the user's path (the banner, the management UI, the metrics port, the
 * operator's tools) use this instead of the suite's shared broker.
 */
import { ChildProcess, execFile, spawn } from 'child_process';
import * as path from 'path';
import { freePort } from '../src/cli/ports';
import { rabbitmqSeries } from './harness';

const MAIN = path.resolve(__dirname, '..', 'dist', 'cli', 'main.js');

export interface WarrenSetup {
  env: NodeJS.ProcessEnv;
  dataDir: string;
  amqpUrl: string;
  managementPort: number;
  metricsPort: number;
}

/** Free ports for everything `warren start` listens on, and the environment that names them. */
export async function warrenSetup(dataDir: string, name: string, extra: NodeJS.ProcessEnv = {}): Promise<WarrenSetup> {
  const amqpPort = await freePort();
  const managementPort = await freePort();
  const metricsPort = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    WARREN_DATA: dataDir,
    WARREN_PORT: String(amqpPort),
    WARREN_DIST_PORT: String(await freePort()),
    WARREN_EPMD_PORT: String(await freePort()),
    WARREN_MANAGEMENT_PORT: String(managementPort),
    WARREN_METRICS_PORT: String(metricsPort),
    WARREN_NODE: `${name}-${process.pid}@localhost`,
    WARREN_RABBITMQ: rabbitmqSeries(),
    ...extra,
  };
  return { env, dataDir, amqpUrl: `amqp://guest:guest@127.0.0.1:${amqpPort}`, managementPort, metricsPort };
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `warren ARGS` to completion. */
export function warren(env: NodeJS.ProcessEnv, args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { env: { ...env, ...extraEnv }, maxBuffer: 64 << 20, timeout: 240_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export interface WarrenNode {
  child: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  output: () => string;
  exited: Promise<number | null>;
}

/** `warren start`, resolved once it prints that the node is running; rejects (with its output) if it exits first. */
export function startNode(env: NodeJS.ProcessEnv): Promise<WarrenNode> {
  const child = spawn(process.execPath, [MAIN, 'start'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const onData = (): void => {
      // the banner is printed in one write; wait for its closing rule
      if (out.includes('Ctrl-C stops it cleanly.')) {
        child.stdout!.off('data', onData);
        resolve({ child, output: () => out, exited });
      }
    };
    child.stdout!.on('data', onData);
    void exited.then((code) => reject(new Error(`warren start exited (${code}) before the node ran:\n${out}`)));
  });
}

/** Ctrl-C, as an operator stops it; resolves with the exit code and what it printed. */
export async function stopNode(n: WarrenNode): Promise<{ code: number | null; output: string }> {
  n.child.kill('SIGINT');
  const code = await n.exited;
  return { code, output: n.output() };
}

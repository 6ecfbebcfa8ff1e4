/**
 * Warren's settings in the broker's own config: rabbitmq_warren keys in
 * advanced.config (written by the Broker launcher from pluginEnv) reach the
 * plugin and the sidecar, and a bad key or value stops the node at boot with
 * an error naming both, before any queue starts: never a silent default.
 */
import * as amqp from 'amqplib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Broker } from '../src/cli/broker';
import { PluginEnv } from '../src/cli/node-config';
import { stageInstall } from '../src/cli/plugin-build';
import { freePort } from '../src/cli/ports';
import { broker, collect, rabbitmqSeries } from './harness';

let base: string;
const started: Broker[] = [];

async function node(tag: string, pluginEnv: PluginEnv, installDir?: string): Promise<{ b: Broker; url: string }> {
  const amqpPort = await freePort();
  const b = new Broker({
    dataDir: path.join(base, tag),
    amqpPort,
    distPort: await freePort(),
    epmdPort: await freePort(),
    nodeName: `warren-settings-${tag}-${process.pid}@localhost`,
    sidecarArgs: [],
    pluginEnv,
    installDir,
    startTimeoutMs: 90_000,
  });
  started.push(b);
  return { b, url: `amqp://guest:guest@127.0.0.1:${amqpPort}` };
}

beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-settings-'));
});

afterAll(async () => {
  for (const b of started) {
    if (b.isRunning()) await b.stop().catch(() => b.kill());
    await b.stopEpmd();
  }
  fs.rmSync(base, { recursive: true, force: true });
});

it('a node whose rabbitmq_warren settings are not valid does not start, and its log names each bad key and value', async () => {
  const { b } = await node('bad', { file_size_limit: 100, durability: 'sometimes', read_ahed: 3, call_timeout: 2 ** 32, sidecar_old_space_mb: -5, sidecar_args: ['--queue-window', 'lots'] });
  await expect(b.start()).rejects.toThrow(/did not start: the server exited/);
  const log = fs.readFileSync(b.logFile, 'utf8');
  expect(log).toContain('Warren: setting rabbitmq_warren.file_size_limit = 100 is not valid: it must be an integer from 65536 to 1073741824');
  expect(log).toContain('Warren: setting rabbitmq_warren.durability = "sometimes" is not valid: it must be one of fsync, write');
  expect(log).toContain('Warren: unknown setting rabbitmq_warren.read_ahed = 3');
  expect(log).toContain('Warren: setting rabbitmq_warren.call_timeout = 4294967296 is not valid: it must be an integer from 1 to 2147483647');
  expect(log).toContain('Warren: setting rabbitmq_warren.sidecar_old_space_mb = -5 is not valid: it must be an integer from 0 to 65536');
  expect(log).toContain('Warren: setting rabbitmq_warren.sidecar_args: --queue-window "lots" is not valid (setting queue_window): it must be an integer of at least 1');
  // Stopped before the sidecar: nothing was started on the bad settings.
  expect(log).not.toMatch(/Warren: started sidecar/);
  expect(b.isRunning()).toBe(false);
});

it("a node whose plugin.json is malformed does not start: the sidecar refuses it, and the log names the file and the key", async () => {
  const installDir = stageInstall(path.join(base, 'install'), rabbitmqSeries());
  const manifest = path.join(installDir, 'plugin.json');
  const m = JSON.parse(fs.readFileSync(manifest, 'utf8')) as { settings: Record<string, { default: unknown }> };
  m.settings.queue_window.default = 'many';
  fs.writeFileSync(manifest, JSON.stringify(m));
  const { b } = await node('manifest', {}, installDir);
  await expect(b.start()).rejects.toThrow(/did not start: the server exited/);
  const log = fs.readFileSync(b.logFile, 'utf8');
  expect(log).toContain(`Warren: the sidecar (pid`);
  expect(log).toContain(`refused its configuration: warren sidecar: ${manifest}: settings.queue_window: default "many" must be an integer of at least 1`);
  // Refused once, not restarted in a loop.
  expect(log.match(/Warren: started sidecar/g)).toHaveLength(1);
  expect(b.isRunning()).toBe(false);
});

it('a sidecar that refuses at once, before the boot step waits for it, stops the node the same way: refused once, not restarted', async () => {
  // The sidecar starts early in the boot (pre_boot) and is awaited just before queue recovery; a refusal in
  // between is kept for that wait. A stand-in for Node that refuses in a few ms arrives there first.
  const dir = path.join(base, 'early');
  fs.mkdirSync(dir, { recursive: true });
  const refuse = path.join(dir, 'refuse.sh');
  fs.writeFileSync(refuse, '#!/bin/sh\necho "warren sidecar: refused for the test"\nexit 2\n', { mode: 0o755 });
  const { b } = await node('early', { node_executable: refuse });
  await expect(b.start()).rejects.toThrow(/did not start: the server exited/);
  const log = fs.readFileSync(b.logFile, 'utf8');
  expect(log).toContain('refused its configuration: warren sidecar: refused for the test');
  expect(log).toMatch(/sidecar_refused_its_configuration/);
  expect(log.match(/Warren: started sidecar/g)).toHaveLength(1);
  expect(b.isRunning()).toBe(false);
});

it("settings given in advanced.config reach the sidecar's command line and take effect", async () => {
  const { b, url } = await node('good', { durability: 'write', write_sync_interval_ms: 150, queue_window: 256, index: 'memory', read_ahead: 8, sidecar_old_space_mb: 96 });
  await b.start();
  const log = fs.readFileSync(b.logFile, 'utf8');
  // The sidecar logs what it runs with; its own command line carries the flags.
  expect(log).toMatch(/sidecar \d+ listening on .*\(index memory, .*durability write \(fsync every 150 ms\)/);
  expect(log).toMatch(/Warren: started sidecar .* durable classic queues keep their messages under \S+\/msg_stores\/vhosts\/<vhost>\/warren; settings given: --durability write --write-sync-interval-ms 150 --index memory --queue-window 256/);
  const pid = Number(/Warren: started sidecar .* \(pid (\d+)\)/.exec(log)?.[1]);
  const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  expect(argv.join(' ')).toContain('--durability write --write-sync-interval-ms 150 --index memory --queue-window 256');
  // Node's own flag goes before the script: after it, node would hand it to the sidecar.
  expect(argv.indexOf('--initial-old-space-size=96')).toBeGreaterThan(0);
  expect(argv.indexOf('--initial-old-space-size=96')).toBeLessThan(argv.findIndex((a) => a.endsWith('main.js')));
  expect(log).toMatch(/Warren: started sidecar \S+ --initial-old-space-size=96 \S+main\.js \(pid/);
  expect(await b.ctl(['eval', 'rabbit_warren_config:get(read_ahead).'])).toMatch(/^8\s*$/);
  expect(await b.ctl(['eval', 'rabbit_warren_config:get(read_ahead_bytes).'])).toMatch(/^1048576\s*$/);

  const conn = await amqp.connect(url);
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue('settings-q', { durable: true });
    for (let i = 0; i < 300; i++) ch.sendToQueue('settings-q', Buffer.from(`m${i}`), { persistent: true });
    await ch.waitForConfirms();
    const c = await conn.createChannel();
    const got = await collect(c, 'settings-q', 300);
    expect(got.map((m) => m.content.toString())).toEqual(Array.from({ length: 300 }, (_, i) => `m${i}`));
    got.forEach((m) => c.ack(m));
    await ch.deleteQueue('settings-q');
  } finally {
    await conn.close();
  }
  await b.stop();
});

it("by default the sidecar runs with plugin.json's V8 old-space size (sidecar_old_space_mb: 128)", async () => {
  const b = broker();
  expect(await b.ctl(['eval', 'rabbit_warren_config:get(sidecar_old_space_mb).'])).toMatch(/^128\s*$/);
  const [pid] = b.sidecarPids();
  const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  expect(argv[1]).toBe('--initial-old-space-size=128');
  expect(argv[2]).toMatch(/main\.js$/);
});

it('sidecar_old_space_mb 0 leaves V8 its own default: no Node flag before the script', async () => {
  const { b } = await node('v8default', { sidecar_old_space_mb: 0 });
  await b.start();
  const [pid] = b.sidecarPids();
  const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  expect(argv[1]).toMatch(/main\.js$/);
  expect(argv.some((a) => a.startsWith('--initial-old-space-size'))).toBe(false);
  expect(fs.readFileSync(b.logFile, 'utf8')).toMatch(/Warren: started sidecar \S+ \S+main\.js \(pid/);
  await b.stop();
});

/**
 * End to end, side by side: the same RabbitMQ node setup once with
 * classic queues on RabbitMQ's own message store and once on Warren, driven
 * by amqplib over AMQP 0-9-1 in the same run. One durable queue:
 *
 *   publish   M persistent messages with publisher confirms (1,000 in flight)
 *   memory    resident set of the broker (Erlang VM, plus Warren's sidecar)
 *             holding that backlog
 *   restart   clean stop and start of the node with the backlog
 *   consume   all of them with manual acks (prefetch 1,000), checking order
 *
 *   npm run bench -- e2e [--rabbitmq 3.10|4.0|4.3] [--messages 100000] [--body 1024] [--read-ahead N]
 *
 * --rabbitmq picks the broker (default $WARREN_RABBITMQ, else the host's);
 * the results go to bench/results/e2e-<series>.json.
 *
 * --read-ahead sets rabbitmq_warren's read_ahead (the plugin's default, 64,
 * when not given; 0 turns it off).
 */
import * as amqp from 'amqplib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Broker } from '../src/cli/broker';
import { freePort } from '../src/cli/ports';
import { runtimeFor } from '../src/cli/rabbitmq';
import { numberOption, runChildren, runIfChild } from './children';


function rssMB(pid: number | null): number {
  if (pid === null) return 0;
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 102.4) / 10 : 0;
}

/** CPU seconds (user + system) a process has used so far; 0 if it is gone. */
function cpuSeconds(pid: number | null): number {
  if (pid === null) return 0;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks
  } catch {
    return 0;
  }
}

async function sidecarPid(b: Broker): Promise<number | null> {
  const out = await b.ctl(['eval', 'io:format("~s", [rabbit_warren_sidecar:stats()]).']);
  const stats = JSON.parse(out.slice(0, out.lastIndexOf('}') + 1)) as { pid?: number };
  return stats.pid ?? null;
}

const seconds = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e9;

async function child(store: string, n: number, bodyBytes: number, readAhead: number, series: string): Promise<void> {
  const warren = store === 'warren';
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `warren-e2e-${store}-`));
  const amqpPort = await freePort();
  const b = new Broker({ dataDir, amqpPort, distPort: await freePort(), epmdPort: await freePort(), nodeName: `warren-e2e-${process.pid}@localhost`, rabbitmq: runtimeFor(series), warren, sidecarArgs: [], pluginEnv: { read_ahead: readAhead } });
  const url = `amqp://guest:guest@127.0.0.1:${amqpPort}`;
  const q = 'e2e';
  try {
    await b.start();
    let conn = await amqp.connect(url);
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(q, { durable: true });
    const body = (i: number) => {
      const buf = Buffer.alloc(bodyBytes, i % 251);
      buf.writeUInt32BE(i, 0);
      return buf;
    };
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      ch.sendToQueue(q, body(i), { persistent: true });
      if (i % 1000 === 999) await ch.waitForConfirms();
    }
    await ch.waitForConfirms();
    const publishSecs = seconds(t0);
    await conn.close();

    const rss = rssMB(b.beamPid()) + (warren ? rssMB(await sidecarPid(b)) : 0);

    const t1 = process.hrtime.bigint();
    await b.stop();
    const stopSecs = seconds(t1);
    const t2 = process.hrtime.bigint();
    await b.start();
    const startSecs = seconds(t2);

    conn = await amqp.connect(url);
    const c = await conn.createChannel();
    await c.prefetch(1000);
    const beam = b.beamPid();
    const side = warren ? await sidecarPid(b) : null;
    const brokerCpu0 = cpuSeconds(beam);
    const sidecarCpu0 = cpuSeconds(side);
    const clientCpu0 = process.cpuUsage();
    const t3 = process.hrtime.bigint();
    let next = 0;
    await new Promise<void>((resolve, reject) => {
      void c.consume(q, (m) => {
        if (!m) return;
        const i = m.content.readUInt32BE(0);
        if (i !== next || m.content.length !== bodyBytes) reject(new Error(`expected message ${next}, got ${i}`));
        next = i + 1;
        c.ack(m);
        if (next === n) resolve();
      });
    });
    const consumeSecs = seconds(t3);
    const clientCpu = process.cpuUsage(clientCpu0);
    const consumeCpu = {
      broker: cpuSeconds(beam) - brokerCpu0,
      sidecar: cpuSeconds(side) - sidecarCpu0,
      client: (clientCpu.user + clientCpu.system) / 1e6,
    };
    await conn.close();
    const r1 = (x: number) => Math.round(x * 10) / 10;
    process.stdout.write(
      JSON.stringify({
        bench: 'e2e',
        store: warren ? 'warren' : 'rabbitmq',
        rabbitmq: b.rabbitmq.version,
        messages: n,
        bodyBytes,
        readAhead: warren ? readAhead : undefined,
        publishPerSec: Math.round(n / publishSecs),
        consumePerSec: Math.round(n / consumeSecs),
        // CPU seconds each process spent during the consume phase (the machine has 2 cores)
        consumeCpuSeconds: { broker: r1(consumeCpu.broker), sidecar: r1(consumeCpu.sidecar), client: r1(consumeCpu.client) },
        brokerRssMBWithBacklog: r1(rss),
        cleanStopSeconds: r1(stopSecs),
        startSeconds: r1(startSecs),
      }) + '\n',
    );
  } finally {
    await b.stop().catch(() => b.kill());
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

function main(): void {
  const args = process.argv.slice(2);
  if (runIfChild(args, ([store, n, body, ra, series]) => child(store, Number(n), Number(body), Number(ra), series))) return;
  const i = args.indexOf('--rabbitmq');
  const rt = runtimeFor(i >= 0 ? args[i + 1] : undefined);
  const messages = String(numberOption(args, 'messages', 100_000));
  const body = String(numberOption(args, 'body', 1024));
  const readAhead = String(numberOption(args, 'read-ahead', 64));
  const children = ['rabbitmq', 'warren'].map((store) => [store, messages, body, readAhead, rt.series]);
  runChildren(`e2e-${rt.series}`, __filename, [], children, `RabbitMQ ${rt.version} (Erlang ${rt.erlang}) own store vs Warren, same node setup, amqplib; shared 2-core machine; one run`);
}

main();

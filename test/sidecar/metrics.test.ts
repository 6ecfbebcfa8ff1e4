/**
 * The sidecar's Prometheus endpoint (--metrics-port) scraped after a known
 * workload: 60 persistent messages published with confirms to one durable
 * queue, 10 delivered and left unacknowledged, 5 fetched with no ack, so the
 * figures are exact: 45 ready, 10 unacked, 60 written, 60 confirms observed.
 * A port already taken is logged and the sidecar serves the queue anyway.
 */
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { Client, TOKEN, fetch as fetchOne, initQueue, publish, startVhost } from './client';
import { setLogLevel } from '../../src/sidecar/log';
import { SidecarServer } from '../../src/sidecar/server';
import { freePort } from '../../src/cli/ports';

jest.setTimeout(60_000);

const PUBLISHED = 60;
const UNACKED = 10;
const AUTOACKED = 5;
const BODY_BYTES = (seq: number): number => `body-${seq}`.length;

let base: string;
beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-metrics-'));
});
afterAll(() => fs.rmSync(base, { recursive: true, force: true }));

function server(dataDir: string, metricsPort: number): SidecarServer {
  return new SidecarServer(
    { socket: path.join(dataDir, 'run', 's.sock'), dataDir, maxFrame: 1 << 20, index: 'leveldb', fileSizeLimit: 16 * 1024 * 1024, syncIntervalMs: 2, durability: 'fsync', writeSyncIntervalMs: 200, logLevel: 'info', metricsPort },
    TOKEN,
    () => undefined,
  );
}

/** One sample of `text`: `name{labels}` with the labels in the order prom-client writes them. */
function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(labels ? `${name}{${labels}} ` : `${name} `));
  if (line === undefined) throw new Error(`no sample ${name}{${labels}} in:\n${text}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Captures what the sidecar logs while `fn` runs. */
async function logged<T>(fn: () => Promise<T>): Promise<{ value: T; lines: string }> {
  let lines = '';
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines += chunk.toString();
    return true;
  });
  try {
    return { value: await fn(), lines };
  } finally {
    spy.mockRestore();
  }
}

test('the figures of a known workload, scraped over HTTP', async () => {
  setLogLevel('error');
  const dataDir = path.join(base, 'scrape');
  const port = await freePort();
  const s = server(dataDir, port);
  const { lines } = await logged(() => s.listen());
  try {
    expect(lines).toBe(''); // nothing at error level: the port was had
    const c = await Client.connect(path.join(dataDir, 'run', 's.sock'));
    const vdir = path.join(dataDir, 'msg_stores', 'vhosts', 'V');
    await startVhost(c, vdir, []);
    const { handle } = await initQueue(c, vdir, 0);
    const seqs = Array.from({ length: PUBLISHED }, (_, i) => i);
    for (let i = 0; i < PUBLISHED; i += 20) publish(c, handle, seqs.slice(i, i + 20), 3);
    await c.confirmed(PUBLISHED);
    for (let i = 0; i < UNACKED; i++) expect(await fetchOne(c, handle, true)).toBeTruthy();
    for (let i = 0; i < AUTOACKED; i++) expect(await fetchOne(c, handle, false)).toBeTruthy();

    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    const q = 'vhost="/",queue="q"';
    expect(sample(text, 'warren_queue_messages_ready', q)).toBe(PUBLISHED - UNACKED - AUTOACKED);
    expect(sample(text, 'warren_queue_messages_unacked', q)).toBe(UNACKED);
    expect(sample(text, 'warren_queue_messages_persistent', q)).toBe(PUBLISHED - AUTOACKED);
    const ready = seqs.slice(UNACKED + AUTOACKED).reduce((n, s) => n + BODY_BYTES(s), 0);
    expect(sample(text, 'warren_queue_ready_bytes', q)).toBe(ready);
    expect(sample(text, 'warren_queue_unacked_bytes', q)).toBe(seqs.slice(0, UNACKED).reduce((n, s) => n + BODY_BYTES(s), 0));

    const v = 'vhost="/"';
    expect(sample(text, 'warren_store_writes_total', v)).toBe(PUBLISHED);
    expect(sample(text, 'warren_store_files', v)).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'warren_store_file_bytes', v)).toBeGreaterThanOrEqual(sample(text, 'warren_store_valid_bytes', v));
    // Every persistent publish was confirmed, and each confirm waited on at least one group-commit fsync.
    expect(sample(text, 'warren_confirm_latency_seconds_count', v)).toBe(PUBLISHED);
    const fsyncs = sample(text, 'warren_store_fsyncs_total', v);
    expect(fsyncs).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'warren_store_fsync_seconds_count', v)).toBe(fsyncs);
    expect(sample(text, 'warren_store_fsync_seconds_bucket', `le="+Inf",${v}`)).toBe(fsyncs);
    const ratio = sample(text, 'warren_store_cache_hit_ratio', v);
    expect(ratio).toBeGreaterThanOrEqual(0);
    expect(ratio).toBeLessThanOrEqual(1);
    // A fresh store has no clean-shutdown state: it is opened as rebuilt (from no queue indexes).
    expect(sample(text, 'warren_store_open_seconds', `${v},recovery="rebuilt"`)).toBeGreaterThanOrEqual(0);
    // 60 entries are fewer than one LevelDB batch; none was refused.
    expect(sample(text, 'warren_index_counter', `${v},kind="leveldb",figure="batchFailures"`)).toBe(0);
    expect(text).toMatch(/^warren_sidecar_process_resident_memory_bytes \d+/m);

    expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status).toBe(404);
    c.sock.destroy();
  } finally {
    await s.shutdown();
  }
  await expect(fetch(`http://127.0.0.1:${port}/metrics`)).rejects.toThrow();
});

test('a metrics port already taken is logged, and the sidecar serves its queues without metrics', async () => {
  setLogLevel('info');
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  const port = (taken.address() as net.AddressInfo).port;
  const dataDir = path.join(base, 'taken');
  const s = server(dataDir, port);
  try {
    const { lines } = await logged(() => s.listen());
    expect(lines).toContain(`[error] metrics: cannot listen on 127.0.0.1:${port}`);
    expect(lines).toContain('the sidecar runs without metrics');
    const c = await Client.connect(path.join(dataDir, 'run', 's.sock'));
    const vdir = path.join(dataDir, 'msg_stores', 'vhosts', 'V');
    await startVhost(c, vdir, []);
    const { handle } = await initQueue(c, vdir, 0);
    publish(c, handle, [0, 1, 2], 3);
    await c.confirmed(3);
    expect(await fetchOne(c, handle, false)).toMatchObject({ seq: 0, body: 'body-0' });
    c.sock.destroy();
  } finally {
    await s.shutdown();
    taken.close();
    setLogLevel('error');
  }
});

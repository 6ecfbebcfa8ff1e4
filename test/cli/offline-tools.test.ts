/**
 * `warren inspect`, `verify` and `compact` on a vhost the sidecar itself
 * wrote and stopped cleanly: three durable queues whose messages share the
 * first segment files, two of them drained, so those files are two-thirds
 * garbage while the store as a whole is far below the online compaction's
 * threshold. Then damage is injected into copies of it (a flipped bit, a
 * tampered index) and each must be reported with its file and offset.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Client, TOKEN, fetch, startVhost } from '../sidecar/client';
import { Op } from '../../src/sidecar/protocol';
import { setLogLevel } from '../../src/sidecar/log';
import { SidecarServer } from '../../src/sidecar/server';
import { findVhosts, DataDirError, VhostTarget } from '../../src/cli/data-dirs';
import { inspectVhost } from '../../src/cli/inspect';
import { verifyVhost, VerifyReport } from '../../src/cli/verify';
import { compactVhost } from '../../src/cli/compact';
import { progressOn } from '../../src/cli/progress';
import { scanSegment } from '../../src/store';

setLogLevel('error');
jest.setTimeout(60_000);

const quiet = progressOn(process.stderr, 'test', true);
const noLog = (): void => undefined;
const LIMIT = 256 * 1024;
const BODY = 4096;
const KEYS = ['a'.repeat(32), 'b'.repeat(32), 'c'.repeat(32)];
const [KA, KB, KC] = KEYS;
const SHARED = 140; // interleaved A, B, C: about two files
const ONLY_C = 400;
/** C's messages among the interleaved ones (every third, from the third). */
const C_SHARED = Array.from({ length: SHARED }, (_, i) => i % 3).filter((r) => r === 2).length;
const C_COUNT = C_SHARED + ONLY_C;

let base: string;
beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-offline-'));
});
afterAll(() => fs.rmSync(base, { recursive: true, force: true }));

const bodyOf = (queue: string, seq: number): Buffer => {
  const b = Buffer.alloc(BODY, queue[0]);
  b.write(`${queue}:${seq}:`, 0);
  return b;
};

function server(dataDir: string, index: string): SidecarServer {
  return new SidecarServer(
    { socket: path.join(dataDir, 'run', 's.sock'), dataDir, maxFrame: 1 << 20, index, fileSizeLimit: LIMIT, syncIntervalMs: 2, durability: 'fsync', writeSyncIntervalMs: 200, logLevel: 'error' },
    TOKEN,
    () => undefined,
  );
}

const vdirOf = (dataDir: string): string => path.join(dataDir, 'msg_stores', 'vhosts', 'VHOST1');

async function init(c: Client, dataDir: string, key: string, recover: number): Promise<{ handle: number; len: number }> {
  const r = await c.call(Op.INIT, (w) => w.str('/').str(vdirOf(dataDir)).str(key).str(`q-${key[0]}`).u8(1).u8(recover));
  return { handle: r.u32(), len: r.u32() };
}

function publish(c: Client, handle: number, key: string, seqs: number[]): void {
  c.cast(Op.PUBLISH, (w) => {
    w.u32(handle).u32(seqs.length);
    for (const s of seqs) {
      const blob = bodyOf(key, s);
      const id = crypto.createHash('md5').update(`${key}:${s}`).digest();
      w.u64(s).u8(3).u32(0).i64(-1).u32(blob.length).bytes(id).u32(blob.length).bytes(blob);
    }
  });
}

/** The vhost described above, written by a sidecar with `index` and stopped cleanly, in `dataDir`. */
async function writeFixture(dataDir: string, index: string): Promise<void> {
  const s = server(dataDir, index);
  await s.listen();
  const c = await Client.connect(path.join(dataDir, 'run', 's.sock'));
  await startVhost(c, vdirOf(dataDir), []);
  fs.writeFileSync(path.join(vdirOf(dataDir), '.vhost'), '/');
  const h = new Map<string, number>();
  for (const k of KEYS) h.set(k, (await init(c, dataDir, k, 0)).handle);
  let published = 0;
  for (let i = 0; i < SHARED; i++) {
    const k = KEYS[i % 3];
    publish(c, h.get(k)!, k, [Math.floor(i / 3)]);
    published++;
  }
  for (let i = 0; i < ONLY_C; i += 20) {
    publish(c, h.get(KC)!, KC, Array.from({ length: 20 }, (_, j) => C_SHARED + i + j));
    published += 20;
  }
  await c.confirmed(published);
  for (const k of [KA, KB]) while (await fetch(c, h.get(k)!, false));
  for (const k of KEYS) await c.call(Op.TERMINATE, (w) => w.u32(h.get(k)!));
  c.sock.destroy();
  await s.shutdown();
}

async function only(dir: string): Promise<VhostTarget> {
  const ts = await findVhosts(dir);
  expect(ts).toHaveLength(1);
  return ts[0];
}

function copyOf(from: string, name: string): string {
  const to = path.join(base, name);
  fs.cpSync(from, to, { recursive: true });
  return to;
}

const kinds = (r: VerifyReport): string[] => [...new Set(r.problems.filter((p) => p.severity === 'error').map((p) => p.kind))].sort();

describe.each(['leveldb', 'memory'])('with the %s index', (index) => {
  let data: string;
  beforeAll(async () => {
    data = path.join(base, `fixture-${index}`);
    await writeFixture(data, index);
  });

  it('finds the vhost from the data dir, the vhost dir and its warren/ dir, and names a bad DIR', async () => {
    const t = await only(data);
    expect(t.vhost).toBe('/');
    expect((await only(vdirOf(data))).warren).toBe(t.warren);
    expect((await only(path.join(vdirOf(data), 'warren'))).warren).toBe(t.warren);
    await expect(findVhosts(path.join(base, 'nope'))).rejects.toThrow(DataDirError);
    await expect(findVhosts(os.tmpdir() === base ? '/' : fs.mkdtempSync(path.join(base, 'empty-')))).rejects.toThrow(/holds no Warren data/);
  });

  it('inspect: files, garbage, fragmentation, queues and the clean state, from the summary and from a scan alike', async () => {
    const t = await only(data);
    const r = await inspectVhost(t, null, quiet);
    expect(r.store.indexKind).toBe(index);
    expect(r.store.validBytesFrom).toBe('file summary');
    expect(r.cleanState).toEqual({ store: true, reason: undefined, queuesClean: 3, queuesNotClean: 0 });
    const byKey = new Map(r.queues.map((q) => [q.key, q]));
    expect(byKey.get(KA)!.messages).toBe(0);
    expect(byKey.get(KB)!.messages).toBe(0);
    expect(byKey.get(KC)!.messages).toBe(C_COUNT);
    // the queue's name, recorded by the sidecar at INIT
    expect(KEYS.map((k) => byKey.get(k)!.name)).toEqual(['q-a', 'q-b', 'q-c']);
    expect(byKey.get(KC)!.bytes).toBe(C_COUNT * BODY);
    expect(r.store.files.length).toBeGreaterThan(4);
    // the first two files: two thirds of their records were A's and B's
    for (const f of r.store.files.slice(0, 2)) expect(f.garbageRatio).toBeGreaterThan(0.55);
    expect(r.store.fragmentation.reduce((a, b) => a + b, 0)).toBe(r.store.files.length);
    expect(r.store.fragmentation[6]).toBeGreaterThanOrEqual(2);
    expect(r.store.totals.validBytes).toBe(C_COUNT * (BODY + 28));

    // without the clean state, the valid bytes come from a scan, and are the same
    const copy = copyOf(data, `noclean-${index}`);
    fs.rmSync(path.join(vdirOf(copy), 'warren', 'store', 'clean.json'));
    const r2 = await inspectVhost(await only(copy), null, quiet);
    expect(r2.store.validBytesFrom).toBe('scan');
    expect(r2.cleanState.store).toBe(false);
    expect(r2.cleanState.reason).toMatch(/no clean shutdown state/);
    expect(r2.store.files.map((f) => [f.file, f.validBytes])).toEqual(r.store.files.map((f) => [f.file, f.validBytes]));
  });

  it('verify: the data the sidecar left is sound, the index cross-checked', async () => {
    const r = await verifyVhost(await only(data), quiet);
    expect(r.problems).toEqual([]);
    expect(r.sound).toBe(true);
    expect(r.indexChecked).toBe(true);
    expect(r.figures.queueMessages).toBe(C_COUNT);
    expect(r.figures.indexEntries).toBe(r.figures.queueMessages);
    expect(r.figures.intactRecords).toBe(SHARED + ONLY_C);
  });

  it('verify: a flipped bit in a live record is reported with its file and offset, and the message it held as missing', async () => {
    const copy = copyOf(data, `flipped-${index}`);
    const t = await only(copy);
    const file = path.join(t.store, '3.rdq');
    const rec = (await scanSegment(file)).records[5];
    const fd = fs.openSync(file, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, rec.offset + 28 + 100);
    b[0] ^= 0x10;
    fs.writeSync(fd, b, 0, 1, rec.offset + 28 + 100);
    fs.closeSync(fd);
    const r = await verifyVhost(t, quiet);
    expect(r.sound).toBe(false);
    const damaged = r.problems.find((p) => p.kind === 'damaged-record')!;
    expect(damaged).toMatchObject({ severity: 'error', file, offset: rec.offset });
    expect(damaged.message).toMatch(/1 record\(s\) failing their checksum/);
    const missing = r.problems.filter((p) => p.kind === 'missing-message');
    expect(missing).toHaveLength(1);
    expect(missing[0].message).toContain(rec.id.toString('hex'));
    expect(missing[0].message).toContain(`queue 'q-c' (${KC})`);
    // the (trusted) index still places it there
    expect(r.problems.find((p) => p.kind === 'dangling-entry')).toMatchObject({ file, offset: rec.offset });
    expect(kinds(r)).toEqual(['damaged-record', 'dangling-entry', 'missing-message']);
  });

  it('verify: a lost queue segment is reported, and the records only it referenced come out as unreferenced', async () => {
    const copy = copyOf(data, `lostseg-${index}`);
    const t = await only(copy);
    const qdir = path.join(t.queues, KC);
    const segs = fs.readdirSync(qdir).filter((n) => n.endsWith('.seg'));
    expect(segs.length).toBeGreaterThan(0); // a clean stop folds the journal into segments
    fs.rmSync(path.join(qdir, segs[0]));
    const r = await verifyVhost(t, quiet);
    expect(r.sound).toBe(false);
    expect(kinds(r)).toContain('unreferenced');
    const un = r.problems.filter((p) => p.kind === 'unreferenced');
    expect(un.length).toBeGreaterThan(0);
    expect(un[0].message).toMatch(/ref count 1 in the index but no queue holds it/);
    expect(un[0].file).toMatch(/\d+\.rdq$/);
  });

  it('compact: reclaims the garbage offline, keeps every message, and leaves a state the next start trusts', async () => {
    const copy = copyOf(data, `compact-${index}`);
    const t = await only(copy);
    const before = await inspectVhost(t, null, quiet);
    const r = await compactVhost(t, quiet, noLog);
    expect(r.opened).toBe('clean');
    expect(r.compactions).toBeGreaterThanOrEqual(1);
    expect(r.reclaimedBytes).toBeGreaterThan(0);
    expect(r.after.bytes).toBeLessThan(r.before.bytes);
    expect(r.after.validBytes).toBe(before.store.totals.validBytes);
    const after = await inspectVhost(t, null, quiet);
    expect(after.cleanState.store).toBe(true);
    expect(after.store.totals.garbageBytes).toBeLessThan(before.store.totals.garbageBytes);
    const v = await verifyVhost(t, quiet);
    expect(v.problems).toEqual([]);
    expect(v.indexChecked).toBe(true);

    // the sidecar starts clean on it and gives back every message of C, in order, with its body
    const s = server(copy, index);
    await s.listen();
    try {
      const c = await Client.connect(path.join(copy, 'run', 's.sock'));
      expect(await startVhost(c, vdirOf(copy), KEYS)).toEqual([1, 1, 1]);
      const q = await init(c, copy, KC, 1);
      const want = C_COUNT;
      expect(q.len).toBe(want);
      for (let seq = 0; seq < want; seq++) {
        const m = await fetch(c, q.handle, false);
        expect(m?.seq).toBe(seq);
        expect(m?.body).toBe(bodyOf(KC, seq).toString());
      }
      expect(s.stats()).toMatchObject({ vhosts: { '/': { storeClean: true } } });
      c.sock.destroy();
    } finally {
      await s.shutdown();
    }
  });

  it('compact: after a crash (no clean state) rebuilds from every queue index and compacts without losing a message', async () => {
    const copy = copyOf(data, `compact-crashed-${index}`);
    const t = await only(copy);
    fs.rmSync(path.join(t.store, 'clean.json'));
    for (const k of KEYS) fs.rmSync(path.join(t.queues, k, 'clean.json'));
    const r = await compactVhost(t, quiet, noLog);
    expect(r.opened).toBe('rebuilt');
    expect(r.compactions).toBeGreaterThanOrEqual(1);
    const v = await verifyVhost(t, quiet);
    expect(v.problems.filter((p) => p.severity === 'error')).toEqual([]);
    expect(v.figures.queueMessages).toBe(C_COUNT);
  });
});

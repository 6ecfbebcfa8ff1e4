/**
 * The corruption matrix, through the sidecar as the plugin drives it: a
 * durable queue of 200 confirmed messages (on the LevelDB index, part of its
 * index folded into segments, part in its journal) is stopped, one file is
 * damaged, and the sidecar is started again. Damage to a record costs that
 * record alone and is reported; damage to a state file costs trust (the next
 * start is non-clean), never a message; the queue always opens.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { RecordType, decodeRecords } from '../../src/queue/journal-codec';
import { setLogLevel } from '../../src/sidecar/log';
import { SidecarServer } from '../../src/sidecar/server';
import { Client, KEY, TOKEN, fetch, initQueue, publish, startVhost } from './client';

const N = 200;
let dir: string;
let sock: string;
let vdir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-corrupt-'));
  sock = path.join(dir, 'run', 's.sock');
  vdir = path.join(dir, 'msg_stores', 'vhosts', 'VHOST1');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

async function newServer(): Promise<SidecarServer> {
  const s = new SidecarServer(
    { socket: sock, dataDir: dir, maxFrame: 1 << 20, index: 'leveldb', fileSizeLimit: 1 << 20, syncIntervalMs: 2, durability: 'fsync', writeSyncIntervalMs: 200, logLevel: 'error', queue: { segmentEntries: 64, journalEntries: 150, window: 16 } },
    TOKEN,
    () => undefined,
  );
  await s.listen();
  return s;
}

/** 200 confirmed persistent messages, then a clean stop (TERMINATE, store closed) or a crash (the connection drops, no clean state for the queue). */
async function fill(stop: 'clean' | 'crash'): Promise<void> {
  const server = await newServer();
  const c = await Client.connect(sock);
  await startVhost(c, vdir, []);
  const q = await initQueue(c, vdir, 0);
  // In batches of 50, each confirmed before the next: the first 150 are folded into segments, the last 50 stay in the journal.
  for (let s = 0; s < N; s += 50) {
    publish(c, q.handle, Array.from({ length: 50 }, (_, i) => s + i), 1 | 2);
    await c.confirmed(s + 50);
  }
  if (stop === 'clean') await c.call(Op_TERMINATE, (w) => w.u32(q.handle));
  c.sock.destroy();
  await c.closed;
  await server.shutdown();
}
const Op_TERMINATE = 3;

/** Starts again and takes every message; returns their seqs and the log. */
async function reopen(stop: 'clean' | 'crash'): Promise<{ seqs: number[]; log: string }> {
  const lines: string[] = [];
  setLogLevel('info');
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  const warn = jest.spyOn(process, 'emitWarning').mockImplementation((w: string | Error) => void lines.push(String(w)));
  try {
    const server = await newServer();
    const c = await Client.connect(sock);
    await startVhost(c, vdir, [KEY]);
    const q = await initQueue(c, vdir, stop === 'clean' ? 1 : 2);
    const seqs: number[] = [];
    for (let m = await fetch(c, q.handle, false); m; m = await fetch(c, q.handle, false)) {
      expect(m.body).toBe(`body-${m.seq}`);
      seqs.push(m.seq);
    }
    c.sock.destroy();
    await c.closed;
    await server.shutdown();
    return { seqs, log: lines.join('') };
  } finally {
    spy.mockRestore();
    warn.mockRestore();
    setLogLevel('error');
  }
}

const all = Array.from({ length: N }, (_, i) => i);
const storeDir = () => path.join(vdir, 'warren', 'store');
const queueDir = () => path.join(vdir, 'warren', 'queues', KEY);
function find(root: string, test: (p: string) => boolean): string {
  const hit = (fs.readdirSync(root, { recursive: true }) as string[]).map((p) => path.join(root, p)).find(test);
  if (!hit) throw new Error(`nothing under ${root} matches`);
  return hit;
}
function flip(file: string, at: number): void {
  const b = fs.readFileSync(file);
  b[at] ^= 0x20;
  fs.writeFileSync(file, b);
}
/** Offset of the store record of message `seq` (its id is 16 bytes of seq) in `file`. */
const recordOf = (file: string, seq: number) => fs.readFileSync(file).indexOf(Buffer.alloc(16, seq)) - 12;

describe('damage to one record costs that record alone, and is reported', () => {
  it('a store segment: a flipped bit in one message body', async () => {
    await fill('clean');
    const seg = find(storeDir(), (p) => p.endsWith('.rdq'));
    flip(seg, recordOf(seg, 57) + 28 + 3);
    const { seqs, log } = await reopen('clean');
    expect(seqs).toEqual(all.filter((s) => s !== 57));
    expect(log).toMatch(/message seq 57 .* has no readable body in the store; dropped/);
  });

  it('a store segment cut in the middle of a record (after a crash)', async () => {
    await fill('crash');
    const seg = find(storeDir(), (p) => p.endsWith('.rdq'));
    const cut = recordOf(seg, 199) + 20;
    fs.truncateSync(seg, cut);
    const { seqs, log } = await reopen('crash');
    expect(seqs).toEqual(all.filter((s) => s !== 199));
    expect(log).toMatch(/1 messages recorded in the queue index have no body in the store/);
    // the store's rebuild counted this queue: it, not a lookup a message, says which bodies are there
    expect(log).toMatch(/bodies: 200 known from the start-up walk, 0 asked of the store/);
  });

  it('the queue journal: a flipped bit in one publish record (after a crash)', async () => {
    await fill('crash');
    const journal = path.join(queueDir(), 'journal');
    const buf = fs.readFileSync(journal);
    // The journal holds what was published since the last fold: damage the middle one of its publishes.
    const publishes = decodeRecords(buf).records.flatMap((r) => (r.type === RecordType.PUBLISH ? [r.entry.seq] : []));
    expect(publishes.length).toBeGreaterThan(2);
    const victim = publishes[Math.floor(publishes.length / 2)];
    flip(journal, buf.indexOf(Buffer.alloc(16, victim)) + 3);
    const { seqs, log } = await reopen('crash');
    expect(seqs).toEqual(all.filter((s) => s !== victim));
    expect(log).toMatch(new RegExp(`queue journal ${journal}: checksum record at offset \\d+, \\d+ bytes skipped; the records after it are kept`));
  });

  it('a queue index segment: a flipped bit in one entry', async () => {
    await fill('clean');
    const seg = path.join(queueDir(), '0.seg');
    const at = fs.readFileSync(seg).indexOf(Buffer.alloc(16, 10));
    flip(seg, at + 5);
    // The clean marker's figures no longer match what a scan finds: start non-clean so the segment is read.
    fs.rmSync(path.join(queueDir(), 'clean.json'));
    const { seqs, log } = await reopen('crash');
    expect(seqs).toEqual(all.filter((s) => s !== 10));
    expect(log).toMatch(/queue index segment .*0\.seg: checksum record at offset \d+; \d+ bytes skipped/);
  });
});

describe('damage to a state file costs trust, never a message', () => {
  const cases: [string, () => string, (file: string) => void][] = [
    ['the store file summary', () => path.join(storeDir(), 'file_summary.json'), (f) => flip(f, 70)],
    ['the store recovery terms', () => path.join(storeDir(), 'clean.json'), (f) => flip(f, 70)],
    ['the queue clean marker', () => path.join(queueDir(), 'clean.json'), (f) => flip(f, 70)],
    ['the LevelDB marker', () => find(storeDir(), (p) => p.endsWith('leveldb-clean.json')), (f) => flip(f, 12)],
    ['the LevelDB directory (deleted)', () => find(storeDir(), (p) => path.basename(p) === 'leveldb'), (f) => fs.rmSync(f, { recursive: true, force: true })],
    ['the queue layout', () => path.join(queueDir(), 'layout.json'), (f) => fs.writeFileSync(f, '{"segmentEnt')],
  ];
  it.each(cases)('%s', async (_name, file, damage) => {
    await fill('clean');
    const f = file();
    expect(fs.existsSync(f)).toBe(true);
    damage(f);
    const { seqs } = await reopen('clean');
    expect(seqs).toEqual(all);
  });
});

describe('damage found by the ref-count walk of a non-clean start', () => {
  it('a damaged queue layout: the walk takes the segment size the files agree with, and every message comes back', async () => {
    await fill('crash');
    fs.writeFileSync(path.join(queueDir(), 'layout.json'), '{"segmentEnt');
    const { seqs, log } = await reopen('crash');
    expect(seqs).toEqual(all);
    expect(log).toMatch(/layout\.json is not JSON.*the segment files agree with 64 entries a segment/);
  });
});

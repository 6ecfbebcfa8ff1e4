/**
 * SIGKILL of a child process running the store, at random moments during
 * writes, removes and compaction, 50+ rounds on the same directory: after each
 * kill the store is reopened non-clean with refDeltas of what the child had
 * synced and not removed, and every such message must be readable and intact,
 * and no segment file may be left with damage.
 *
 * The child runs the built store (dist/, made by `npm test`'s build step).
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { MessageStore } from '../../src/store';
import { scanSegment } from '../../src/store/segment-scanner';
import { rmDir, segmentFiles, tmpDir } from './helpers';

const DIST_STORE = path.resolve(__dirname, '../../dist/store/index.js');
const ROUNDS = Number(process.env.WARREN_KILL_ROUNDS ?? 50);
const FILE_SIZE = 64 * 1024;

/** The child: opens the store, then writes, syncs and removes until killed, reporting on stdout. */
const CHILD = `
const { MessageStore } = require(${JSON.stringify(DIST_STORE)});
const fs = require('fs');
const [dir, round, liveFile, seed, index] = process.argv.slice(1);
let a = Number(seed) >>> 0;
const random = () => { a = (a + 0x6d2b79f5) >>> 0; let t = Math.imul(a ^ (a >>> 15), a | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
const idOf = (s) => { const b = Buffer.alloc(16); b.write(s.padEnd(16, '.').slice(0, 16)); return b; };
const bodyOf = (s) => { const n = 100 + (s.length * 7919 + s.charCodeAt(s.length - 1) * 31) % 1900; const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = (s.charCodeAt(i % s.length) + i) & 0xff; return b; };
(async () => {
  const live = JSON.parse(fs.readFileSync(liveFile, 'utf8'));
  const store = await MessageStore.open({ dir, fileSizeLimit: ${FILE_SIZE}, clientRefs: ['k'], syncIntervalMs: 1, index });
  const c = store.client('k');
  process.stdout.write('ready\\n');
  let n = 0;
  for (;;) {
    const batch = [];
    for (let i = 0; i < 20; i++) { const s = round + ':' + (n++); batch.push(s); c.write(idOf(s), bodyOf(s)); }
    await c.sync(batch.map(idOf));
    process.stdout.write('S ' + batch.join(' ') + '\\n');
    live.push(...batch);
    const gone = [];
    for (let i = live.length - 1; i >= 0; i--) if (random() < 0.3) gone.push(live.splice(i, 1)[0]);
    if (gone.length) { process.stdout.write('R ' + gone.join(' ') + '\\n'); c.remove(gone.map(idOf)); }
    process.stdout.write('C ' + store.stats().compactions + '\\n');
  }
})().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(3); });
`;

function idOf(s: string): Buffer {
  const b = Buffer.alloc(16);
  b.write(s.padEnd(16, '.').slice(0, 16));
  return b;
}

function bodyOf(s: string): Buffer {
  const n = 100 + ((s.length * 7919 + s.charCodeAt(s.length - 1) * 31) % 1900);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (s.charCodeAt(i % s.length) + i) & 0xff;
  return b;
}

function runChild(dir: string, round: number, liveFile: string, killAfterMs: number, index: string): Promise<{ synced: string[]; removed: Set<string>; compactions: number }> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, ['-e', CHILD, dir, String(round), liveFile, String(round * 7 + 1), index], { stdio: ['ignore', 'pipe', 'pipe'] });
    const synced: string[] = [];
    const removed = new Set<string>();
    let compactions = 0;
    let buf = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const line of lines) {
        if (line === 'ready') setTimeout(() => child.kill('SIGKILL'), killAfterMs);
        else if (line.startsWith('S ')) synced.push(...line.slice(2).split(' '));
        else if (line.startsWith('R ')) for (const s of line.slice(2).split(' ')) removed.add(s);
        else if (line.startsWith('C ')) compactions = Number(line.slice(2));
      }
    });
    child.on('exit', (code, signal) => {
      if (signal === 'SIGKILL') resolve({ synced, removed, compactions });
      else reject(new Error(`child exited with ${code ?? signal} before the kill: ${err}`));
    });
  });
}

it.each(['memory', 'leveldb'])(`with the %s index, every synced message survives ${ROUNDS} SIGKILLs during writes, removes and compaction`, async (index) => {
  expect(fs.existsSync(DIST_STORE)).toBe(true); // built by `npm test`
  const dir = await tmpDir('warren-kill-');
  const liveFile = path.join(dir, '..', `${path.basename(dir)}-live.json`);
  let live: string[] = [];
  let compactions = 0;
  try {
    // Start with a clean, empty store whose client ref is 'k'.
    const first = await MessageStore.open({ dir, clientRefs: undefined, fileSizeLimit: FILE_SIZE, index });
    first.client('k');
    await first.close();
    for (let round = 0; round < ROUNDS; round++) {
      fs.writeFileSync(liveFile, JSON.stringify(live));
      const { synced, removed, compactions: ran } = await runChild(dir, round, liveFile, 30 + ((round * 37) % 300), index);
      // Confirmed (synced) and not removed: what a queue index would still reference.
      const expected = [...live, ...synced].filter((s) => !removed.has(s));
      const store = await MessageStore.open({
        dir,
        fileSizeLimit: FILE_SIZE,
        index,
        clientRefs: ['k'],
        refDeltas: async function* () {
          for (const s of expected) yield [idOf(s), 1] as [Buffer, number];
        },
      });
      expect(store.successfullyRecovered).toBe(false);
      const c = store.client('k');
      for (const s of expected) {
        const got = await c.read(idOf(s));
        if (!got || !got.equals(bodyOf(s))) throw new Error(`round ${round}: message ${s} ${got ? 'came back corrupted' : 'was lost'}`);
      }
      const st = store.stats();
      expect(st.messages).toBe(expected.length);
      expect(st.checksumFailures).toBe(0); // what a kill tears in the current file counts as torn bytes (torn-writes.ts)
      compactions += ran;
      await store.close();
      // Torn writes are covered or cut: no file is left with damage that would keep it from compaction.
      for (const f of await segmentFiles(dir)) expect({ f, ...(await scanSegment(path.join(dir, f))) }).toMatchObject({ f, checksumFailures: 0, skippedBytes: 0 });
      live = expected;
    }
  } finally {
    await rmDir(dir);
    fs.rmSync(liveFile, { force: true });
  }
  // The kills must have landed among compactions too, not only appends.
  expect(compactions).toBeGreaterThan(0);
}, 600_000);

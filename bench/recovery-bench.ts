/**
 * Recovery benchmarks: how long a store takes to open after a crash (non-clean:
 * ref counts fed from the caller, each segment file read from its hint file,
 * or, with the hints deleted before the crash, scanned) and after a clean
 * stop, with N live messages among garbage; and how fast the same files read
 * raw, for scale. One child process per index and mode; JSON lines on stdout
 * and in bench/results/recovery.json.
 *
 *   npm run bench -- recovery [--messages 2000000] [--body 512]
 *
 * The files were just written, so they are in the page cache: the scan rate is
 * the store's own cost (read + CRC32C + index), compared with a raw read of
 * the same cached files.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MessageStore } from '../src/store';
import { numberOption, runChildren, runIfChild } from './children';

const id = (n: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(0x57524e01, 0);
  b.writeUIntBE(n, 10, 6);
  return b;
};
const r3 = (x: number) => Math.round(x * 1000) / 1000;
const secondsSince = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e9;

async function rawRead(dir: string): Promise<{ bytes: number; seconds: number }> {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.rdq'));
  const buf = Buffer.allocUnsafe(1 << 20);
  let bytes = 0;
  const t0 = process.hrtime.bigint();
  for (const f of files) {
    const fh = await fs.promises.open(path.join(dir, f), 'r');
    try {
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        bytes += bytesRead;
      }
    } finally {
      await fh.close();
    }
  }
  return { bytes, seconds: secondsSince(t0) };
}

async function child(index: string, n: number, bodySize: number, mode: string): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-recovery-bench-'));
  try {
    let store = await MessageStore.open({ dir, index, clientRefs: undefined });
    const c = store.client('bench');
    const body = Buffer.alloc(bodySize, 3);
    const BATCH = 2000;
    for (let b = 0; b < n; b += BATCH) {
      const ids = Array.from({ length: Math.min(BATCH, n - b) }, (_, i) => id(b + i));
      for (const x of ids) c.write(x, body);
      await c.sync(ids);
    }
    // a quarter becomes garbage (below the compaction threshold: the scan must skip it)
    const dead = (i: number) => i % 4 === 3;
    for (let b = 0; b < n; b += BATCH) {
      const ids: Buffer[] = [];
      for (let i = b; i < Math.min(b + BATCH, n); i++) if (dead(i)) ids.push(id(i));
      c.remove(ids);
    }
    await store.quiesce();
    const before = store.stats();
    await store.simulateCrash();
    // 'scan': as a start that finds no hints (the first after an upgrade, or every hint damaged)
    if (mode === 'scan') for (const f of fs.readdirSync(dir)) if (f.endsWith('.rdh')) fs.rmSync(path.join(dir, f));

    const lines: Array<{ t: number; msg: string }> = [];
    const t0 = process.hrtime.bigint();
    const log = (_level: string, msg: string) => lines.push({ t: r3(secondsSince(t0)), msg });
    store = await MessageStore.open({
      dir,
      index,
      clientRefs: ['bench'],
      log,
      refDeltas: async function* () {
        for (let i = 0; i < n; i++) if (!dead(i)) yield [id(i), 1] as [Buffer, number];
      },
    });
    const nonClean = secondsSince(t0);
    store.client('bench'); // the queue comes back and registers its ref again
    const after = store.stats();
    await store.quiesce(); // the hints a scan leaves behind are written before the clean stop
    if (after.messages !== before.messages) throw new Error(`recovered ${after.messages} messages, expected ${before.messages}`);
    await store.close();

    const t1 = process.hrtime.bigint();
    store = await MessageStore.open({ dir, index, clientRefs: ['bench'] });
    const clean = secondsSince(t1);
    if (!store.successfullyRecovered) throw new Error('clean reopen was not trusted');
    await store.close();

    const raw = await rawRead(dir);
    const mib = before.fileBytes / 1048576;
    const progress = lines.filter((l) => /^recovery: (\d+\/\d+ segment files done|counted)/.test(l.msg));
    process.stdout.write(
      JSON.stringify({
        bench: 'recovery',
        index,
        mode,
        hintedFiles: after.openHintedFiles,
        scannedFiles: after.openScannedFiles,
        messages: before.messages,
        garbageMessages: n - before.messages,
        segmentMiB: Math.round(mib),
        nonCleanOpenSeconds: r3(nonClean),
        // segment MiB recovered per second (read from hints or scanned)
        scanMiBPerSec: Math.round(mib / nonClean),
        rawReadMiBPerSec: Math.round(raw.bytes / 1048576 / raw.seconds),
        cleanOpenSeconds: r3(clean),
        progressLines: progress.length,
        firstProgress: progress[0] ? `${progress[0].t}s ${progress[0].msg}` : '',
      }) + '\n',
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function main(): void {
  const args = process.argv.slice(2);
  if (runIfChild(args, ([index, n, body, mode]) => child(index, Number(n), Number(body), mode))) return;
  const messages = String(numberOption(args, 'messages', 2_000_000));
  const body = String(numberOption(args, 'body', 512));
  const children = ['memory', 'leveldb'].flatMap((index) => ['hints', 'scan'].map((mode) => [index, messages, body, mode]));
  runChildren('recovery', __filename, ['--max-old-space-size=8192'], children, 'files in the page cache; shared 2-core machine; one run');
}

main();

/**
 * The message store against the disk and two embedded stores, in process.
 * Each case runs in a child process of its own (so memory and caches do not
 * mix); results are JSON lines on stdout and in bench/results/store.json, and
 * a summary table at the end.
 *
 *   npm run bench -- store [--messages 100000] [--large-messages 10000] [--latency-messages 2000]
 *                          [--cases raw,warren,churn,classic-level,better-sqlite3]
 *
 * Every case runs for 1 KiB bodies (--messages of them) and 64 KiB bodies
 * (--large-messages), in the same run, in a fresh directory of os.tmpdir():
 *   raw             the disk's limit: the bytes of Warren's records (28-byte
 *                   header + body) appended to one file, 256 writes in flight
 *                   then one fdatasync ("inflight"), or the 256 as one writev
 *                   then one fdatasync ("writev")
 *   warren          MessageStore with default options and the LevelDB index
 *                   (the sidecar's default): write + sync in windows of 256
 *                   (write 256, await their sync, repeat), read of all of them
 *                   by id (256 concurrent), remove of all of them (until quiesced)
 *   churn           warren in a steady state with compaction running: a queue
 *                   keeping ~N/4 live messages; two of every three are removed
 *                   min(512, N/32) messages after their write, the third ~3·N/4 later, so
 *                   files are left two-thirds empty and compaction combines them.
 *                   Fails unless compaction ran (and ran in the steady part).
 *   classic-level   LevelDB (classic-level through `level`, default options)
 *                   holding the bodies by 16-byte id: a batch of 256 puts with
 *                   {sync: true}, getMany of 256, a batch of 256 dels with {sync: true}
 *   better-sqlite3  SQLite in WAL mode with synchronous=FULL, table
 *                   (id BLOB PRIMARY KEY, body BLOB): one transaction per 256
 *                   inserts, reads one by one, one transaction per 256 deletes
 * and, for raw / warren / classic-level / better-sqlite3, a latency case: one
 * message at a time (write then wait until it is durable), --latency-messages
 * of them (0: none), p50 / p99 / max.
 */
import { execFileSync } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Level } from 'level';
import { MessageStore, RECORD_HEADER_SIZE, StoreStats } from '../src/store';
import { resolveOptions } from '../src/store/options';
import { levelDbIndexFactory } from '../src/index/leveldb-factory';
import { numberOption, runChildren, runIfChild } from './children';

type Value = string | number | boolean | Record<string, string | number | boolean | undefined>;
interface Result {
  bench: string;
  engine: string;
  [k: string]: Value;
}

const WINDOW = 256;
const KIB = 1024;
const SIZES = [1 * KIB, 64 * KIB];
const ENGINES = ['raw', 'warren', 'churn', 'classic-level', 'better-sqlite3'];

const id = (n: number) => {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(0x57524e00, 0);
  b.writeUIntBE(n, 10, 6);
  return b;
};
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'warren-store-bench-'));
const mb = (bytes: number) => Math.round((bytes / 1048576) * 10) / 10;
const r1 = (x: number) => Math.round(x * 10) / 10;
const r3 = (x: number) => Math.round(x * 1000) / 1000;
const now = () => process.hrtime.bigint();
const secsSince = (t0: bigint) => Number(now() - t0) / 1e9;

/** 64 distinct random bodies of `size` bytes (random so that LevelDB's Snappy gains nothing). */
function bodies(size: number): Buffer[] {
  return Array.from({ length: 64 }, () => randomBytes(size));
}

/** The load a line describes, and the rate of one phase. */
function load(n: number, size: number, extra: Record<string, number> = {}): Record<string, number> {
  return { messages: n, bodyBytes: size, recordBytes: RECORD_HEADER_SIZE + size, window: WINDOW, ...extra };
}
function rate(n: number, bytesPer: number, secs: number): Record<string, number> {
  return { seconds: r3(secs), msgsPerSec: Math.round(n / secs), MBps: r1((n * bytesPer) / secs / 1048576) };
}
function percentiles(ms: number[]): Record<string, number> {
  const s = [...ms].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { p50ms: r3(at(0.5)), p99ms: r3(at(0.99)), maxMs: r3(s[s.length - 1]) };
}
const rssMB = () => mb(process.memoryUsage().rss);

function storeFigures(s: StoreStats): Record<string, number | boolean> {
  return {
    syncs: s.syncs,
    files: s.files,
    messages: s.messages,
    compactions: s.compactions,
    reclaimedMB: mb(s.reclaimedBytes),
    garbageRatio: r3(s.garbageRatio),
    fileMB: mb(s.fileBytes),
  };
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = tmp();
  try {
    return await fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ raw

async function raw(size: number, n: number): Promise<Result[]> {
  const rec = RECORD_HEADER_SIZE + size;
  const out: Result[] = [];
  for (const mode of ['inflight', 'writev'] as const) {
    out.push(
      await withDir(async (dir) => {
        // One buffer per slot of the window, rewritten with each message's bytes (a header-sized prefix + a body).
        const bs = bodies(size);
        const slots = Array.from({ length: WINDOW }, () => Buffer.alloc(rec));
        const fh = await fs.promises.open(path.join(dir, 'raw.rdq'), 'w');
        let pos = 0;
        let syncs = 0;
        const t0 = now();
        for (let b = 0; b < n; b += WINDOW) {
          const k = Math.min(WINDOW, n - b);
          for (let i = 0; i < k; i++) {
            slots[i].writeUInt32BE(b + i, 0);
            bs[(b + i) % bs.length].copy(slots[i], RECORD_HEADER_SIZE);
          }
          if (mode === 'inflight') {
            const ws: Array<Promise<unknown>> = [];
            for (let i = 0; i < k; i++) ws.push(fh.write(slots[i], 0, rec, pos + i * rec));
            await Promise.all(ws);
          } else {
            await fh.writev(slots.slice(0, k), pos);
          }
          pos += k * rec;
          await fh.datasync();
          syncs++;
        }
        const secs = secsSince(t0);
        await fh.close();
        if (fs.statSync(path.join(dir, 'raw.rdq')).size !== n * rec) throw new Error('raw file has the wrong size');
        return { bench: 'write+sync', engine: 'raw', mode, ...load(n, size), ...rate(n, rec, secs), fdatasyncs: syncs, rssMB: rssMB() };
      }),
    );
  }
  return out;
}

async function rawLatency(size: number, n: number): Promise<Result[]> {
  const rec = RECORD_HEADER_SIZE + size;
  return withDir(async (dir) => {
    const bs = bodies(size);
    const buf = Buffer.alloc(rec);
    const fh = await fs.promises.open(path.join(dir, 'raw.rdq'), 'w');
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      buf.writeUInt32BE(i, 0);
      bs[i % bs.length].copy(buf, RECORD_HEADER_SIZE);
      const t0 = now();
      await fh.write(buf, 0, rec, i * rec);
      await fh.datasync();
      ms.push(secsSince(t0) * 1000);
    }
    await fh.close();
    return [{ bench: 'latency', engine: 'raw', ...load(n, size, { window: 1 }), ...percentiles(ms), rssMB: rssMB() }];
  });
}

// ------------------------------------------------------------------ warren

const openWarren = (dir: string) => MessageStore.open({ dir, index: levelDbIndexFactory, clientRefs: undefined });

/** The defaults the store ran with (whatever src/store/options.ts says today). */
function tuning(dir: string): Record<string, number> {
  const o = resolveOptions({ dir });
  return { fileSizeLimit: o.fileSizeLimit, ...o.tuning } as unknown as Record<string, number>;
}

async function warren(size: number, n: number): Promise<Result[]> {
  const rec = RECORD_HEADER_SIZE + size;
  return withDir(async (dir) => {
    const store = await openWarren(dir);
    const c = store.client('bench');
    const bs = bodies(size);
    const batches: Buffer[][] = [];
    for (let b = 0; b < n; b += WINDOW) batches.push(Array.from({ length: Math.min(WINDOW, n - b) }, (_, i) => id(b + i)));

    let t0 = now();
    let k = 0;
    for (const ids of batches) {
      for (const x of ids) c.write(x, bs[k++ % bs.length]);
      await c.sync(ids);
    }
    const writeSecs = secsSince(t0);
    const afterWrite = storeFigures(store.stats());
    await store.quiesce();

    t0 = now();
    k = 0;
    for (const ids of batches) {
      const got = await Promise.all(ids.map((x) => c.read(x)));
      for (const g of got) if (!g || !g.equals(bs[k++ % bs.length])) throw new Error('warren read back a wrong or missing body');
    }
    const readSecs = secsSince(t0);
    const afterRead = storeFigures(store.stats());

    t0 = now();
    for (const ids of batches) c.remove(ids);
    await store.quiesce();
    const removeSecs = secsSince(t0);
    const afterRemove = storeFigures(store.stats());
    if (afterRemove.messages !== 0) throw new Error(`warren still holds ${afterRemove.messages} messages after removing all`);
    const rss = rssMB();
    await store.close();
    const common = { engine: 'warren', index: 'leveldb', ...load(n, size) };
    return [
      { bench: 'write+sync', ...common, ...rate(n, rec, writeSecs), store: afterWrite, options: tuning(dir), rssMB: rss },
      { bench: 'read', ...common, concurrency: WINDOW, ...rate(n, size, readSecs), store: afterRead, rssMB: rss },
      { bench: 'remove', ...common, ...rate(n, rec, removeSecs), store: afterRemove, rssMB: rss },
    ];
  });
}

async function warrenLatency(size: number, n: number): Promise<Result[]> {
  return withDir(async (dir) => {
    const store = await openWarren(dir);
    const c = store.client('bench');
    const bs = bodies(size);
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const x = id(i);
      const t0 = now();
      c.write(x, bs[i % bs.length]);
      await c.sync([x]);
      ms.push(secsSince(t0) * 1000);
    }
    const s = storeFigures(store.stats());
    const rss = rssMB();
    await store.close();
    return [{ bench: 'latency', engine: 'warren', index: 'leveldb', ...load(n, size, { window: 1 }), ...percentiles(ms), store: s, options: tuning(dir), rssMB: rss }];
  });
}

/**
 * A queue whose consumers ack out of order: message i is removed EARLY
 * messages after its write when i % 3 != 0, and LATE after it otherwise, so
 * ~2/3 of every file older than EARLY is garbage and compaction has work.
 * Live messages ≈ 2/3·EARLY + LATE/3 ≈ `live`.
 */
async function churn(size: number, n: number): Promise<Result[]> {
  const rec = RECORD_HEADER_SIZE + size;
  const live = Math.floor(n / 4);
  const EARLY = Math.min(512, Math.max(WINDOW, Math.floor(live / 8)));
  const LATE = 3 * live - 2 * EARLY;
  const total = 2 * n;
  // compaction starts only past two file limits of file bytes (compactor.ts): make sure the load gets there
  const limit = resolveOptions({ dir: '.' }).fileSizeLimit;
  if (LATE <= 4 * EARLY || LATE * rec < 2.5 * limit) {
    throw new Error(`churn needs more messages (--messages / --large-messages): ${n} × ${size} B gives a late distance of ${LATE} (${mb(LATE * rec)} MB, the file limit is ${mb(limit)} MB)`);
  }
  return withDir(async (dir) => {
    const store = await openWarren(dir);
    const c = store.client('bench');
    const bs = bodies(size);
    let early = 0;
    let late = 0;
    let removed = 0;
    let maxLive = 0;
    let steady: { t: bigint; written: number; stats: StoreStats } | undefined;
    const t0 = now();
    for (let h = 0; h < total; ) {
      const k = Math.min(WINDOW, total - h);
      const ids = Array.from({ length: k }, (_, i) => id(h + i));
      for (let i = 0; i < k; i++) c.write(ids[i], bs[(h + i) % bs.length]);
      await c.sync(ids);
      h += k;
      const gone: Buffer[] = [];
      for (; early + EARLY <= h; early++) if (early % 3 !== 0) gone.push(id(early));
      for (; late + LATE <= h; late++) if (late % 3 === 0) gone.push(id(late));
      if (gone.length) c.remove(gone);
      removed += gone.length;
      maxLive = Math.max(maxLive, h - removed);
      if (!steady && h >= LATE) steady = { t: now(), written: h, stats: store.stats() };
    }
    await store.quiesce();
    const tEnd = now();
    const secs = Number(tEnd - t0) / 1e9;
    const end = store.stats();
    const rss = rssMB();
    await store.close();
    if (!steady) throw new Error('churn never reached its steady state');
    const steadyWrites = total - steady.written;
    const steadySecs = Number(tEnd - steady.t) / 1e9;
    const steadyCompactions = end.compactions - steady.stats.compactions;
    if (end.compactions === 0 || end.reclaimedBytes === 0) throw new Error(`churn did not exercise compaction: ${JSON.stringify(storeFigures(end))}`);
    if (steadyCompactions === 0) throw new Error(`no compaction ran in the churn's steady state: ${JSON.stringify(storeFigures(end))}`);
    return [
      {
        bench: 'churn',
        engine: 'warren',
        index: 'leveldb',
        ...load(total, size, { liveTarget: live, maxLive, liveAtEnd: end.messages, removeEarlyAfter: EARLY, removeLateAfter: LATE }),
        pattern: 'write 256 + sync; remove i%3!=0 EARLY messages after write, i%3==0 LATE after',
        ...rate(total, rec, secs),
        steady: { writes: steadyWrites, seconds: r3(steadySecs), msgsPerSec: Math.round(steadyWrites / steadySecs), compactions: steadyCompactions },
        store: storeFigures(end),
        rssMB: rss,
      },
    ];
  });
}

// ------------------------------------------------------------------ classic-level

async function classicLevel(size: number, n: number): Promise<Result[]> {
  return withDir(async (dir) => {
    const db = new Level<Buffer, Buffer>(path.join(dir, 'db'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    const bs = bodies(size);
    const batches: Buffer[][] = [];
    for (let b = 0; b < n; b += WINDOW) batches.push(Array.from({ length: Math.min(WINDOW, n - b) }, (_, i) => id(b + i)));
    let t0 = now();
    let k = 0;
    for (const ids of batches) await db.batch(ids.map((key) => ({ type: 'put' as const, key, value: bs[k++ % bs.length] })), { sync: true });
    const writeSecs = secsSince(t0);
    t0 = now();
    k = 0;
    for (const ids of batches) {
      const got = await db.getMany(ids);
      for (const g of got) if (!g || !g.equals(bs[k++ % bs.length])) throw new Error('classic-level read back a wrong or missing body');
    }
    const readSecs = secsSince(t0);
    t0 = now();
    for (const ids of batches) await db.batch(ids.map((key) => ({ type: 'del' as const, key })), { sync: true });
    const removeSecs = secsSince(t0);
    const rss = rssMB();
    await db.close();
    const common = { engine: 'classic-level', options: 'level 10 / classic-level defaults (Snappy on; bodies are random)', ...load(n, size) };
    return [
      { bench: 'write+sync', ...common, ...rate(n, RECORD_HEADER_SIZE + size, writeSecs), rssMB: rss },
      { bench: 'read', ...common, concurrency: WINDOW, ...rate(n, size, readSecs), rssMB: rss },
      { bench: 'remove', ...common, ...rate(n, RECORD_HEADER_SIZE + size, removeSecs), rssMB: rss },
    ];
  });
}

async function classicLevelLatency(size: number, n: number): Promise<Result[]> {
  return withDir(async (dir) => {
    const db = new Level<Buffer, Buffer>(path.join(dir, 'db'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    const bs = bodies(size);
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = now();
      await db.put(id(i), bs[i % bs.length], { sync: true });
      ms.push(secsSince(t0) * 1000);
    }
    const rss = rssMB();
    await db.close();
    return [{ bench: 'latency', engine: 'classic-level', ...load(n, size, { window: 1 }), ...percentiles(ms), rssMB: rss }];
  });
}

// ------------------------------------------------------------------ better-sqlite3

/** The little of better-sqlite3 used here (it ships no types, and @types/better-sqlite3 is not installed). */
interface SqliteStatement {
  run(...params: unknown[]): unknown;
  get(...params: unknown[]): unknown;
  pluck(): SqliteStatement;
}
interface SqliteDb {
  pragma(source: string, options?: { simple: boolean }): unknown;
  exec(source: string): void;
  prepare(source: string): SqliteStatement;
  transaction<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void;
  close(): void;
}
type SqliteCtor = new (file: string) => SqliteDb;

function openSqlite(dir: string): { db: SqliteDb; pragmas: Record<string, string | number> } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Database = require('better-sqlite3') as SqliteCtor;
  const db = new Database(path.join(dir, 'bench.sqlite'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.exec('CREATE TABLE m (id BLOB PRIMARY KEY, body BLOB)');
  const p = (name: string) => db.pragma(name, { simple: true }) as string | number;
  const pragmas = {
    journal_mode: p('journal_mode'),
    synchronous: p('synchronous') === 2 ? 'FULL' : String(p('synchronous')),
    page_size: p('page_size'),
    wal_autocheckpoint: p('wal_autocheckpoint'),
    sqlite: db.prepare('SELECT sqlite_version()').pluck().get() as string,
  };
  if (pragmas.journal_mode !== 'wal' || pragmas.synchronous !== 'FULL') throw new Error(`sqlite pragmas not taken: ${JSON.stringify(pragmas)}`);
  return { db, pragmas };
}

async function sqlite(size: number, n: number): Promise<Result[]> {
  return withDir(async (dir) => {
    const { db, pragmas } = openSqlite(dir);
    const ins = db.prepare('INSERT INTO m (id, body) VALUES (?, ?)');
    const sel = db.prepare('SELECT body FROM m WHERE id = ?').pluck();
    const del = db.prepare('DELETE FROM m WHERE id = ?');
    const insertAll = db.transaction((ids: Buffer[], from: number, bs: Buffer[]) => {
      for (let i = 0; i < ids.length; i++) ins.run(ids[i], bs[(from + i) % bs.length]);
    });
    const deleteAll = db.transaction((ids: Buffer[]) => {
      for (const x of ids) del.run(x);
    });
    const bs = bodies(size);
    const batches: Buffer[][] = [];
    for (let b = 0; b < n; b += WINDOW) batches.push(Array.from({ length: Math.min(WINDOW, n - b) }, (_, i) => id(b + i)));
    let t0 = now();
    batches.forEach((ids, j) => insertAll(ids, j * WINDOW, bs));
    const writeSecs = secsSince(t0);
    t0 = now();
    let k = 0;
    for (const ids of batches) {
      for (const x of ids) {
        const g = sel.get(x) as Buffer | undefined;
        if (!g || !g.equals(bs[k++ % bs.length])) throw new Error('sqlite read back a wrong or missing body');
      }
    }
    const readSecs = secsSince(t0);
    t0 = now();
    for (const ids of batches) deleteAll(ids);
    const removeSecs = secsSince(t0);
    const rss = rssMB();
    db.close();
    const common = { engine: 'better-sqlite3', pragmas, ...load(n, size) };
    return [
      { bench: 'write+sync', ...common, ...rate(n, RECORD_HEADER_SIZE + size, writeSecs), rssMB: rss },
      { bench: 'read', ...common, concurrency: 1, ...rate(n, size, readSecs), rssMB: rss },
      { bench: 'remove', ...common, ...rate(n, RECORD_HEADER_SIZE + size, removeSecs), rssMB: rss },
    ];
  });
}

async function sqliteLatency(size: number, n: number): Promise<Result[]> {
  return withDir(async (dir) => {
    const { db, pragmas } = openSqlite(dir);
    const ins = db.prepare('INSERT INTO m (id, body) VALUES (?, ?)');
    const bs = bodies(size);
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = now();
      ins.run(id(i), bs[i % bs.length]); // autocommit: one transaction, one WAL fsync
      ms.push(secsSince(t0) * 1000);
    }
    const rss = rssMB();
    db.close();
    return [{ bench: 'latency', engine: 'better-sqlite3', pragmas, ...load(n, size, { window: 1 }), ...percentiles(ms), rssMB: rss }];
  });
}

// ------------------------------------------------------------------ parent

const CASES: Record<string, Record<string, (size: number, n: number) => Promise<Result[]>>> = {
  raw: { bulk: raw, latency: rawLatency },
  warren: { bulk: warren, latency: warrenLatency },
  churn: { bulk: churn },
  'classic-level': { bulk: classicLevel, latency: classicLevelLatency },
  'better-sqlite3': { bulk: sqlite, latency: sqliteLatency },
};

async function child(engine: string, phase: string, size: number, n: number): Promise<void> {
  const rs = await CASES[engine][phase](size, n);
  // one line per child (runChildren's contract); several results ride in it
  process.stdout.write(JSON.stringify(rs.length === 1 ? rs[0] : { bench: 'group', engine, results: rs }) + '\n');
}

function fmt(x: number | undefined): string {
  return x === undefined ? '—' : x.toLocaleString('en-US');
}

function summary(file: string): void {
  const rows: Result[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const r = JSON.parse(line) as Result & { results?: Result[] };
    if (r.bench === 'meta') continue;
    rows.push(...(r.results ?? [r]));
  }
  const pick = (engine: string, bench: string, size: number, mode?: string) =>
    rows.filter((r) => r.engine === engine && r.bench === bench && r.bodyBytes === size && (mode === undefined || r.mode === mode));
  const best = (rs: Result[]) => rs.reduce<Result | undefined>((a, r) => (a === undefined || (r.msgsPerSec as number) > (a.msgsPerSec as number) ? r : a), undefined);
  const out: string[] = [];
  const line = (cells: string[]) => out.push(`| ${cells.join(' | ')} |`);
  for (const size of SIZES) {
    const n = pick('raw', 'write+sync', size)[0]?.messages ?? pick('warren', 'write+sync', size)[0]?.messages;
    out.push('', `${size / KIB} KiB bodies (${fmt(n as number | undefined)} messages, windows of ${WINDOW}; msg/s, MB/s of record bytes for write+sync)`);
    line(['operation', 'raw append+fdatasync', 'warren', 'classic-level', 'better-sqlite3']);
    line(['---', '---', '---', '---', '---']);
    const cell = (r: Result | undefined, mbps = false) => (r ? `${fmt(r.msgsPerSec as number)}${mbps ? ` (${r.MBps} MB/s)` : ''}` : '—');
    const rawW = best(pick('raw', 'write+sync', size));
    line([
      'write+sync',
      rawW ? `${cell(rawW, true)} [${rawW.mode}]` : '—',
      cell(pick('warren', 'write+sync', size)[0], true),
      cell(pick('classic-level', 'write+sync', size)[0], true),
      cell(pick('better-sqlite3', 'write+sync', size)[0], true),
    ]);
    for (const op of ['read', 'remove']) line([op, '—', cell(pick('warren', op, size)[0]), cell(pick('classic-level', op, size)[0]), cell(pick('better-sqlite3', op, size)[0])]);
    const lat = (e: string) => {
      const r = pick(e, 'latency', size)[0];
      return r ? `${r.p50ms} / ${r.p99ms}` : '—';
    };
    line(['1 at a time, p50 / p99 ms', lat('raw'), lat('warren'), lat('classic-level'), lat('better-sqlite3')]);
    const ch = pick('warren', 'churn', size)[0];
    if (ch) {
      const st = ch.steady as Record<string, number>;
      const s = ch.store as Record<string, number>;
      line(['churn (steady state, compaction running)', '—', `${fmt(ch.msgsPerSec as number)} (steady ${fmt(st.msgsPerSec)}; ${s.compactions} compactions, ${s.reclaimedMB} MB reclaimed)`, '—', '—']);
    }
  }
  const w64 = pick('warren', 'write+sync', 64 * KIB)[0];
  const raw64 = best(pick('raw', 'write+sync', 64 * KIB));
  out.push('');
  if (w64 && raw64) {
    const pct = (100 * (w64.msgsPerSec as number)) / (raw64.msgsPerSec as number);
    out.push(`warren 64 KiB write+sync = ${pct.toFixed(1)}% of raw append+fdatasync bandwidth (target ≥ 85%: ${pct >= 85 ? 'met' : 'NOT met'})`);
  }
  const w1 = pick('warren', 'write+sync', KIB)[0];
  const others = [pick('classic-level', 'write+sync', KIB)[0], pick('better-sqlite3', 'write+sync', KIB)[0]].filter((r): r is Result => r !== undefined);
  const other = best(others);
  if (w1 && other) {
    const x = (w1.msgsPerSec as number) / (other.msgsPerSec as number);
    out.push(`warren 1 KiB write+sync = ${x.toFixed(2)}× the better of classic-level and better-sqlite3 (${other.engine}) (target ≥ 3×: ${x >= 3 ? 'met' : 'NOT met'})`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

/** The commit the store's code was built from, and whether src/ had uncommitted changes. */
function srcVersion(): string {
  try {
    const git = (...a: string[]) => execFileSync('git', a, { cwd: path.resolve(__dirname, '../..'), encoding: 'utf8' }).trim();
    return `${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain', '--', 'src') ? ' + uncommitted changes in src/' : ''}`;
  } catch {
    return 'unknown (no git)';
  }
}

function main(): void {
  const args = process.argv.slice(2);
  if (runIfChild(args, ([engine, phase, size, n]) => child(engine, phase, Number(size), Number(n)))) return;
  const counts: Record<number, number> = { [KIB]: numberOption(args, 'messages', 100_000), [64 * KIB]: numberOption(args, 'large-messages', 10_000) };
  const latencyN = numberOption(args, 'latency-messages', 2_000);
  const ci = args.indexOf('--cases');
  const wanted = ci >= 0 ? args[ci + 1].split(',') : ENGINES;
  for (const e of wanted) if (!CASES[e]) throw new Error(`unknown case ${e}; cases: ${ENGINES.join(',')}`);
  const children: string[][] = [];
  for (const size of SIZES) {
    for (const engine of ENGINES.filter((e) => wanted.includes(e))) {
      children.push([engine, 'bulk', String(size), String(counts[size])]);
      if (CASES[engine].latency && latencyN > 0) children.push([engine, 'latency', String(size), String(latencyN)]);
    }
  }
  runChildren('store', __filename, ['--max-old-space-size=4096'], children, `store bench, tmpdir ${os.tmpdir()}, src at ${srcVersion()}; shared 2-core machine; figures from one run`);
  summary(path.resolve(__dirname, '../../bench/results/store.json'));
}

main();

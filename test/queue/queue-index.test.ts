import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { RecordType, decodeRecords, encodePublish, encodeSeqs } from '../../src/queue/journal-codec';
import { QueueIndex, consumeCleanMarker, replayJournal } from '../../src/queue/queue-index';

const quiet = () => undefined;
const id = (n: number) => Buffer.alloc(16, n);
const entry = (seq: number, flags = 1) => ({ seq, id: id(seq), flags, expiry: seq % 2 ? -1 : 1_700_000_000_000_000 + seq, size: 100 + seq });

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-qi-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('journal codec', () => {
  it('round-trips publish, deliver and ack records', () => {
    const buf = Buffer.concat([encodePublish(entry(1)), encodeSeqs(RecordType.DELIVER, [1]), encodeSeqs(RecordType.ACK, [1, 2 ** 40])]);
    const r = decodeRecords(buf);
    expect(r.stop).toBeUndefined();
    expect(r.validBytes).toBe(buf.length);
    expect(r.records).toEqual([
      { type: RecordType.PUBLISH, entry: entry(1) },
      { type: RecordType.DELIVER, seqs: [1] },
      { type: RecordType.ACK, seqs: [1, 2 ** 40] },
    ]);
  });

  it('stops at a torn tail and at a flipped bit', () => {
    const good = encodePublish(entry(1));
    const next = encodePublish(entry(2));
    const torn = decodeRecords(Buffer.concat([good, next.subarray(0, next.length - 3)]));
    expect([torn.records.length, torn.validBytes, torn.stop]).toEqual([1, good.length, 'torn']);
    const flipped = Buffer.concat([good, next]);
    flipped[good.length + 20] ^= 0x10;
    const bad = decodeRecords(flipped);
    expect([bad.records.length, bad.validBytes, bad.stop]).toEqual([1, good.length, 'checksum']);
  });
});

describe('QueueIndex', () => {
  it('replays publishes, deliveries and acks in seq order', async () => {
    const { index } = await QueueIndex.open(dir, quiet);
    for (const s of [0, 1, 2, 3, 4]) index.publish(entry(s));
    index.delivered([1, 3]);
    index.acked([0, 3]);
    await index.sync();
    const r = await replayJournal(dir);
    expect(r.entries.map((e) => [e.seq, e.flags & 4])).toEqual([
      [1, 4],
      [2, 0],
      [4, 0],
    ]);
    expect(r.nextSeq).toBe(5);
    await index.close();
  });

  it('cuts a torn tail on open and appends after the last good record', async () => {
    const first = await QueueIndex.open(dir, quiet);
    first.index.publish(entry(0));
    first.index.publish(entry(1));
    await first.index.close();
    const file = path.join(dir, 'journal');
    const full = fs.readFileSync(file);
    fs.writeFileSync(file, full.subarray(0, full.length - 5));
    const warnings: string[] = [];
    const { index, replay } = await QueueIndex.open(dir, (_l, m) => warnings.push(m));
    expect(replay.entries.map((e) => e.seq)).toEqual([0]);
    expect(replay.truncated?.reason).toBe('torn');
    expect(warnings.join()).toMatch(/cut 41 bytes/);
    index.publish(entry(7));
    await index.close();
    expect((await replayJournal(dir)).entries.map((e) => e.seq)).toEqual([0, 7]);
  });

  it('rewrites to the live entries, keeping records appended meanwhile', async () => {
    const { index } = await QueueIndex.open(dir, quiet);
    for (let s = 0; s < 100; s++) index.publish(entry(s));
    index.acked(Array.from({ length: 98 }, (_, i) => i));
    await index.write();
    const before = fs.statSync(path.join(dir, 'journal')).size;
    const rewrite = index.rewrite([entry(98), entry(99)]);
    index.publish(entry(100));
    await rewrite;
    await index.sync();
    expect(fs.statSync(path.join(dir, 'journal')).size).toBeLessThan(before / 10);
    expect((await replayJournal(dir)).entries.map((e) => e.seq)).toEqual([98, 99, 100]);
    await index.close();
  });

  it('terminate leaves a clean marker that is consumed once', async () => {
    const { index } = await QueueIndex.open(dir, quiet);
    index.publish(entry(0));
    index.publish(entry(1));
    index.delivered([1]);
    await index.terminate([entry(0), { ...entry(1), flags: 5 }], { nextSeq: 2, count: 2 });
    expect(await consumeCleanMarker(dir)).toEqual({ nextSeq: 2, count: 2 });
    expect(await consumeCleanMarker(dir)).toBeUndefined();
    expect((await replayJournal(dir)).entries.map((e) => [e.seq, e.flags])).toEqual([
      [0, 1],
      [1, 5],
    ]);
  });

  it('treats a garbled clean marker as absent', async () => {
    fs.writeFileSync(path.join(dir, 'clean.json'), '{"nextSeq":');
    expect(await consumeCleanMarker(dir)).toBeUndefined();
    expect(fs.existsSync(path.join(dir, 'clean.json'))).toBe(false);
  });

  it('destroy removes the directory', async () => {
    const { index } = await QueueIndex.open(dir, quiet);
    index.publish(entry(0));
    await index.destroy();
    expect(fs.existsSync(dir)).toBe(false);
  });
});

/**
 * Fuzzing of everything Warren decodes from bytes it did not just write: the
 * sidecar's frames (from a socket), the queue journal's and the store's
 * records and every state file (from disk, after any crash or bit rot).
 * Each input is generated or a valid one mutated; each decoder must return
 * or throw its own error, never anything else and never hang, and records
 * that the damage did not touch must all be recovered.
 *
 * WARREN_FUZZ_RUNS inputs per target (default 10,000: 50,000 in all in
 * `npm test`; `npm run torture -- fuzz` runs 200,000 per target, 1,000,000
 * in all). WARREN_FUZZ_SEED replays a failing run.
 */
import fc from 'fast-check';
import { parseMeta } from '../../src/index/leveldb-format';
import { JournalEntry, RecordType, decodeRecords, encodePublish, encodeSeqs } from '../../src/queue/journal-codec';
import { parseCleanTerms } from '../../src/queue/queue-index';
import { FrameDecoder, ProtocolError, Writer } from '../../src/sidecar/frames';
import { Op, decodeRequest } from '../../src/sidecar/protocol';
import { parseFileSummary } from '../../src/store/file-summary';
import { sealJson, unsealJson } from '../../src/store/fs-util';
import { decodeRecord, encodeRecord } from '../../src/store/record-codec';
import { parseRecoveryTerms } from '../../src/store/recovery';

const RUNS = Number(process.env.WARREN_FUZZ_RUNS ?? 10_000);
const SEED = Number(process.env.WARREN_FUZZ_SEED ?? Date.now() % 1_000_000);
const params = { numRuns: RUNS, seed: SEED };
jest.setTimeout(Math.max(60_000, RUNS * 5));

/**
 * A buffer with byte changes applied, then at most one cut or insertion (the
 * last one given that is structural): `touched` says, in the original's
 * offsets, whether a range overlaps a change (a record that does may be lost,
 * no other).
 */
type Mutation = { at: number; kind: 'set' | 'cut' | 'insert'; value: number; n: number };
const mutation = fc.record({ at: fc.nat(), kind: fc.constantFrom<'set' | 'cut' | 'insert'>('set', 'set', 'set', 'cut', 'insert'), value: fc.integer({ min: 0, max: 255 }), n: fc.integer({ min: 1, max: 12 }) });

function mutate(buf: Buffer, ms: Mutation[]): { out: Buffer; touched: (from: number, to: number) => boolean } {
  let out = Buffer.from(buf);
  const touched: [number, number][] = [];
  if (out.length === 0) return { out, touched: () => false };
  for (const m of ms.filter((x) => x.kind === 'set')) {
    const at = m.at % out.length;
    out[at] = m.value;
    touched.push([at, at + 1]);
  }
  const structural = ms.filter((x) => x.kind !== 'set').pop();
  if (structural) {
    const at = structural.at % out.length;
    if (structural.kind === 'cut') {
      out = out.subarray(0, at);
      touched.push([at, Infinity]);
    } else {
      out = Buffer.concat([out.subarray(0, at), Buffer.alloc(structural.n, structural.value), out.subarray(at)]);
      touched.push([at, at + 1]);
    }
  }
  return { out, touched: (from, to) => touched.some(([a, b]) => a < to && b > from) };
}

const entry = (seq: number, id: number): JournalEntry => ({ seq, id: Buffer.alloc(16, id), flags: 1 | (seq % 2 ? 4 : 0), expiry: seq % 3 ? -1 : 1_700_000_000_000_000 + seq, size: 100 + (seq % 1000) });
const journalRecord = fc.oneof(
  fc.tuple(fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 0, max: 255 })).map(([seq, id]) => encodePublish(entry(seq, id))),
  fc.tuple(fc.constantFrom(RecordType.DELIVER, RecordType.ACK), fc.array(fc.integer({ min: 0, max: 2 ** 40 }), { maxLength: 20 })).map(([t, seqs]) => encodeSeqs(t, seqs)),
);

describe(`fuzzing (${RUNS} inputs per target, seed ${SEED}; replay with WARREN_FUZZ_SEED=${SEED})`, () => {
  it('sidecar frames: decodeRequest returns a request or throws ProtocolError, for generated and mutated payloads', () => {
    const valid = [
      new Writer().u8(Op.START).u32(1).str('/').str('/d/msg_stores/vhosts/A').u32(1).str('a'.repeat(32)).str('b'.repeat(32)).finish(),
      new Writer().u8(Op.INIT).u32(2).str('/').str('/d').str('c'.repeat(32)).str('q').u8(1).u8(2).finish(),
      new Writer().u8(Op.PUBLISH).u32(0).u32(7).u32(1).u64(3).u8(3).u32(2).i64(-1).u32(5).bytes(Buffer.alloc(16, 1)).u32(5).bytes(Buffer.from('hello')).finish(),
      new Writer().u8(Op.ACK).u32(0).u32(7).u32(2).u64(1).u64(2).finish(),
      new Writer().u8(Op.FAIL_DELIVERY).u32(0).u32(7).u32(2).u64(1).u64(2).finish(),
      new Writer().u8(Op.FETCH).u32(9).u32(7).u32(64).u8(2).u8(1).finish(),
      new Writer().u8(Op.AUTH).u32(0).bytes(Buffer.alloc(32, 7)).finish(),
    ];
    const payload = fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      fc.tuple(fc.constantFrom(...valid), fc.array(mutation, { minLength: 1, maxLength: 4 })).map(([v, ms]) => mutate(v, ms).out),
    );
    fc.assert(
      fc.property(payload, (p) => {
        try {
          const f = decodeRequest(p);
          expect(typeof f.req.op).toBe('number');
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
        }
      }),
      params,
    );
  });

  it('sidecar frames: the stream decoder yields frames or throws ProtocolError, buffering nothing past its limit', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), fc.integer({ min: 0, max: 256 }), (chunks, limit) => {
        const d = new FrameDecoder(limit);
        try {
          for (const c of chunks) for (const f of d.push(Buffer.from(c))) expect(f.length).toBeLessThanOrEqual(limit);
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
          expect(d.pending).toBe(0);
        }
        expect(d.pending).toBeLessThanOrEqual(limit + 4);
      }),
      params,
    );
  });

  it('queue journal: decodeRecords never throws, and every record the damage did not touch is recovered, in order', () => {
    fc.assert(
      fc.property(fc.array(journalRecord, { minLength: 1, maxLength: 40 }), fc.array(mutation, { maxLength: 3 }), (recs, ms) => {
        const buf = Buffer.concat(recs);
        const { out, touched } = mutate(buf, ms);
        const r = decodeRecords(out);
        expect(r.validBytes).toBeLessThanOrEqual(out.length);
        let pos = 0;
        const expected: string[] = [];
        for (const rec of recs) {
          if (!touched(pos, pos + rec.length)) expected.push(rec.toString('hex'));
          pos += rec.length;
        }
        const got = new Set(r.records.map((x) => (x.type === RecordType.PUBLISH ? encodePublish(x.entry) : encodeSeqs(x.type, x.seqs)).toString('hex')));
        for (const e of expected) expect(got.has(e)).toBe(true);
        for (const d of [...r.skipped, ...(r.tail ? [r.tail] : [])]) expect(d.offset + d.bytes).toBeLessThanOrEqual(out.length);
      }),
      params,
    );
  });

  it('store records: decodeRecord never throws and never returns a record failing its checksum', () => {
    const rec = fc.tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.uint8Array({ maxLength: 200 })).map(([id, body]) => encodeRecord(Buffer.from(id), Buffer.from(body)));
    fc.assert(
      fc.property(rec, fc.array(mutation, { maxLength: 3 }), fc.nat(40), (r, ms, at) => {
        const { out } = mutate(r, ms);
        for (const pos of [0, at % Math.max(1, out.length)]) {
          const d = decodeRecord(out, pos);
          if (d.kind === 'ok') expect(encodeRecord(Buffer.from(d.id), Buffer.from(d.body)).equals(out.subarray(pos, pos + d.totalSize))).toBe(true);
        }
      }),
      params,
    );
  });

  it('state files (queue clean marker, file summary, recovery terms, LevelDB marker): garbage and damaged files are refused, never thrown on', () => {
    const valid = [
      Buffer.from(sealJson({ version: 2, nextSeq: 10, count: 3, bytes: 300, expiring: 1, redeliverBelow: 0, segments: [[0, 3, 300, 1]], deliveryCounts: [[4, 2], [7, 1]] })),
      Buffer.from(sealJson({ version: 1, files: [[0, 10, 10, null, 1, 20], [1, 5, 5, 0, null, 5]] })),
      Buffer.from(sealJson({ version: 1, clientRefs: ['a', 'b'], indexKind: 'leveldb' })),
      Buffer.from(JSON.stringify({ count: 4, generation: 'ab'.repeat(16) })),
    ];
    const input = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      fc.tuple(fc.constantFrom(...valid), fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([v, ms]) => mutate(v, ms).out),
      fc.json().map((j) => Buffer.from(j)),
    );
    fc.assert(
      fc.property(input, (b) => {
        const terms = parseCleanTerms(b);
        if (terms) expect(Number.isSafeInteger(terms.count) && terms.count >= 0 && Number.isSafeInteger(terms.nextSeq)).toBe(true);
        for (const [seq, n] of terms?.deliveryCounts ?? []) expect(Number.isSafeInteger(seq) && seq >= 0 && Number.isSafeInteger(n) && n >= 1 && n <= 0xffffffff).toBe(true);
        const sealed = unsealJson(b);
        const fsum = parseFileSummary(sealed);
        if (fsum) for (const s of fsum) expect(s.validTotalSize).toBeLessThanOrEqual(s.fileSize);
        parseRecoveryTerms(sealed);
        const meta = parseMeta(b);
        if (meta) expect(typeof meta.generation).toBe('string');
      }),
      params,
    );
    // The valid ones are accepted as they are.
    expect(parseCleanTerms(valid[0])).toMatchObject({ nextSeq: 10, count: 3, deliveryCounts: [[4, 2], [7, 1]] });
    expect(parseFileSummary(unsealJson(valid[1]))?.length).toBe(2);
    expect(parseRecoveryTerms(unsealJson(valid[2]))).toEqual({ clientRefs: ['a', 'b'], indexKind: 'leveldb' });
    expect(parseMeta(valid[3])).toEqual({ count: 4, generation: 'ab'.repeat(16) });
  });
});

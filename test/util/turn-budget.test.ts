/**
 * Work that can be cut goes on in a later event-loop turn once the turn's
 * budget is spent (src/util/turn-budget.ts): the store's mailbox, a segment's
 * encoding, a fold's overlay. With a budget of 0 ms every check after a
 * turn's first says "spent", so each piece of work must span turns.
 */
import { Mailbox } from '../../src/store/mailbox';
import { JournalEntry, decodeRecords, encodePublish, encodePublishes } from '../../src/queue/journal-codec';
import { DELIVERED, SegmentJournal, overlay, overlayInTurns } from '../../src/queue/journal-state';
import { TurnBudget } from '../../src/util/turn-budget';
import { turnBudgetEach, turnCounter } from '../turns';

const entry = (seq: number): JournalEntry => ({ seq, id: Buffer.alloc(16, seq & 0xff), flags: 1, expiry: seq % 3 === 0 ? -1 : 1_700_000_000_000 + seq, size: seq });

describe('TurnBudget', () => {
  it('is not spent at a turn\'s first check, and a new turn brings a new budget', async () => {
    const b = new TurnBudget(0);
    expect(b.spent()).toBe(false);
    expect(b.spent()).toBe(true);
    await new Promise((r) => setImmediate(r));
    expect(b.spent()).toBe(false);
    const long = new TurnBudget(60_000);
    expect([long.spent(), long.spent()]).toEqual([false, false]);
  });
});

describe('the store mailbox', () => {
  it('applies its operations in order, in several turns once the budget is spent', async () => {
    const turns = turnCounter();
    const seen: Array<[number, number]> = [];
    const box = new Mailbox<number>((op) => void seen.push([op, turns.now()]), () => false, new TurnBudget(0));
    for (let i = 0; i < 10; i++) box.post(i);
    await box.drain();
    turns.stop();
    expect(seen.map(([op]) => op)).toEqual([...Array(10).keys()]);
    expect(new Set(seen.map(([, t]) => t)).size).toBeGreaterThan(1);
  });

  it('applies them all in one turn while the budget lasts', async () => {
    const turns = turnCounter();
    const seen: number[] = [];
    const box = new Mailbox<number>(() => void seen.push(turns.now()), () => false, new TurnBudget(60_000));
    for (let i = 0; i < 10; i++) box.post(i);
    await box.drain();
    turns.stop();
    expect(new Set(seen).size).toBe(1);
  });
});

describe('with the sidecar budget at 0 ms', () => {
  turnBudgetEach(0);

  it('a segment is encoded over several turns, to the bytes of its records one by one', async () => {
    const entries = Array.from({ length: 2000 }, (_, i) => entry(1_000_000 + i));
    const turns = turnCounter();
    const before = turns.now();
    const bytes = await encodePublishes(entries);
    const spanned = turns.now() - before;
    turns.stop();
    expect(spanned).toBeGreaterThan(1);
    expect(bytes.equals(Buffer.concat(entries.map(encodePublish)))).toBe(true);
    const decoded = decodeRecords(bytes);
    expect(decoded.records.map((r) => ('entry' in r ? r.entry : undefined))).toEqual(entries);
  });

  it('a fold\'s overlay spans turns and leaves what overlay() leaves', async () => {
    const live = new Map(Array.from({ length: 3000 }, (_, i) => [i, entry(i)] as [number, JournalEntry]));
    const part: SegmentJournal = new Map();
    for (let s = 0; s < 4000; s++) part.set(s, { pub: s >= 3000 ? entry(s) : undefined, delivered: s % 5 === 0, acked: s % 7 === 0 });
    const expected = new Map(live);
    overlay(expected, part);
    expect(expected.get(5)?.flags).toBe(1 | DELIVERED);
    const turns = turnCounter();
    const before = turns.now();
    await overlayInTurns(live, part);
    const spanned = turns.now() - before;
    turns.stop();
    expect(spanned).toBeGreaterThan(1);
    expect([...live.entries()]).toEqual([...expected.entries()]);
  });
});

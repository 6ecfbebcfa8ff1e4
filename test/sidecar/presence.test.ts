/**
 * The presence check of a queue recovering non-clean: the start-up walk
 * answers for a segment only when it saw that segment's very ids, only once
 * per queue, and the store is asked otherwise.
 */
import { MessageStore } from '../../src/store';
import { idsDigest } from '../../src/queue/walk-digest';
import { presenceCheck, PresenceCounts, StartupWalk } from '../../src/sidecar/presence';
import { mid, rmDir, tmpDir } from '../store/helpers';

let dir: string;
let store: MessageStore;
const [a, b, lost, stranger] = [1, 2, 3, 4].map(mid);

beforeEach(async () => {
  dir = await tmpDir('warren-presence-');
  store = await MessageStore.open({ dir, index: 'memory', log: () => undefined });
  const c = store.client('k');
  c.write(a, Buffer.from('a'));
  c.write(b, Buffer.from('b'));
  await c.sync([a, b]);
});
afterEach(async () => {
  await store.close();
  await rmDir(dir);
});

/** The walk saw a, b and `lost` in segment 0 of queue 'k', and found no record of `lost`. */
const walkOf = (): StartupWalk => ({
  unfound: (id) => id.equals(lost),
  digests: new Map([['k', new Map([[0, idsDigest([a, b, lost])]])]]),
});
const none = (): PresenceCounts => ({ fromWalk: 0, asked: 0 });

it('takes a segment the walk saw from the walk: the ids it found, not the one it did not', async () => {
  const counts = none();
  const check = presenceCheck(store, walkOf(), 'k', counts);
  // the same ids in another order: the same segment
  expect(await check([lost, b, a], 0)).toEqual([false, true, true]);
  expect(counts).toEqual({ fromWalk: 3, asked: 0 });
});

it('asks the store for a segment whose ids differ from what the walk saw, or that it did not see', async () => {
  const counts = none();
  const check = presenceCheck(store, walkOf(), 'k', counts);
  // `stranger` was never counted: the walk cannot say, and the store has no record of it
  expect(await check([a, b, stranger], 0)).toEqual([true, true, false]);
  expect(await check([a, b], 0)).toEqual([true, true]);
  expect(await check([a, stranger], 1)).toEqual([true, false]);
  expect(counts).toEqual({ fromWalk: 0, asked: 7 });
});

it("answers from the walk only at a queue's first INIT after the start", async () => {
  const walk = walkOf();
  presenceCheck(store, walk, 'k', none());
  expect(walk.digests.has('k')).toBe(false);
  const counts = none();
  // a later INIT: the queue may have removed references since (its acks); the store is asked
  expect(await presenceCheck(store, walk, 'k', counts)([a, b, lost], 0)).toEqual([true, true, false]);
  expect(counts).toEqual({ fromWalk: 0, asked: 3 });
});

it('asks the store once it has failed (its index is what it would serve)', async () => {
  const counts = none();
  const check = presenceCheck(store, walkOf(), 'k', counts);
  (store as unknown as { fail(e: unknown): void }).fail(new Error('EIO (injected)'));
  expect(await check([a, b, lost], 0)).toEqual([true, true, false]);
  expect(counts).toEqual({ fromWalk: 0, asked: 3 });
});

/**
 * When a sync is answered: the batcher's leader-style group commit (no
 * timer), `written` (durability write: the record reached the kernel, no
 * fsync) and the background fsync that follows it.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import * as sinon from 'sinon';
import { MessageStore } from '../../src/store';
import { SyncBatcher } from '../../src/store/sync-batcher';
import { body, freshDirEach, mid, segmentFiles } from './helpers';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('SyncBatcher with interval 0 (led by the first waiter)', () => {
  it('fsyncs once the turn that posted a waiter ends; waiters arriving during it ride one next fsync, which starts as it ends', async () => {
    const fsyncs: Array<ReturnType<typeof deferred>> = [];
    let started!: () => void;
    let next = new Promise<void>((r) => (started = r));
    const b = new SyncBatcher(
      () => {
        const d = deferred();
        fsyncs.push(d);
        started();
        return d.promise;
      },
      0,
      256,
    );
    const done: string[] = [];
    const first = [b.wait(), b.wait()].map((p, i) => p.then(() => done.push(`a${i}`)));
    expect(fsyncs.length).toBe(0); // not before the turn ends: waiters of the same turn share it
    await next;
    expect(fsyncs.length).toBe(1);
    next = new Promise<void>((r) => (started = r));
    const second = [b.wait(), b.wait(), b.wait()].map((p, i) => p.then(() => done.push(`b${i}`)));
    await new Promise((r) => setImmediate(r));
    expect(fsyncs.length).toBe(1); // one fsync at a time
    fsyncs[0].resolve();
    await Promise.all(first);
    await next; // the second starts when the first ends, with no timer
    expect(done).toEqual(['a0', 'a1']);
    fsyncs[1].resolve();
    await Promise.all(second);
    expect(done).toEqual(['a0', 'a1', 'b0', 'b1', 'b2']);
    expect(b.syncs).toBe(2);
  });
});

describe('durability write: written() and the background fsync', () => {
  const dir = freshDirEach();

  it('written() resolves once the record is in the file, before any fsync; the background fsync follows within its interval', async () => {
    const store = await MessageStore.open({ dir: dir(), backgroundSyncMs: 20 });
    const c = store.client('q');
    const syncsBefore = store.stats().syncs;
    // the background fsync is awaited as the event itself: the segment file's next fdatasync returning
    const probe = await fsp.open(path.join(dir(), 'probe'), 'w');
    await probe.close();
    await fsp.rm(path.join(dir(), 'probe'));
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    const original = proto.datasync;
    let fsynced!: () => void;
    const backgroundFsync = new Promise<void>((r) => (fsynced = r));
    const spy = sinon.stub(proto, 'datasync').callsFake(async function (this: unknown) {
      await original.call(this);
      fsynced();
    });
    try {
      c.write(mid(1), body(1, 5000));
      await c.written([mid(1)]);
      const [seg] = await segmentFiles(dir());
      expect((await fsp.stat(path.join(dir(), seg))).size).toBeGreaterThanOrEqual(5000);
      expect(store.stats().syncs).toBe(syncsBefore);
      expect(spy.called).toBe(false);
      await backgroundFsync;
    } finally {
      spy.restore();
    }
    await new Promise((r) => setImmediate(r)); // the batcher counts the fsync once its promise settles
    expect(store.stats().syncs).toBe(syncsBefore + 1);
    await store.close();
  });

  it('a write that fails (EIO) rejects written() and fails the store', async () => {
    const store = await MessageStore.open({ dir: dir() });
    const c = store.client('q');
    c.write(mid(1), body(1));
    await c.sync([mid(1)]);
    const probe = await fsp.open(path.join(dir(), 'probe'), 'w');
    await probe.close();
    await fsp.rm(path.join(dir(), 'probe'));
    const proto = Object.getPrototypeOf(probe) as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const eio = () => Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
    const stubs = [sinon.stub(proto, 'write').rejects(eio()), sinon.stub(proto, 'writev').rejects(eio())];
    try {
      c.write(mid(2), body(2));
      await expect(c.written([mid(2)])).rejects.toThrow(/EIO/);
    } finally {
      for (const s of stubs) s.restore();
    }
    expect(store.failed?.message).toMatch(/EIO/);
    expect(() => c.write(mid(3), body(3))).toThrow(/failed/);
    await store.close();
  });
});

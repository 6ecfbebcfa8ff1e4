/**
 * One message store per vhost, under the vhost's message-store directory
 * (`<dir>/warren/store`), and one index directory per durable queue
 * (`<dir>/warren/queues/<key>`). START decides, per vhost, whether the last
 * stop was clean, and recovers the store: trusting its clean state, or
 * rebuilding reference counts from the queues' indexes.
 *
 * Beside it, a transient store (`<dir>/warren/transient`) takes the bodies of
 * transient messages that queues page out of memory; it is wiped at every
 * start, as transient messages never outlive the sidecar.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { pathExists } from '../store/fs-util';
import { MessageStore } from '../store';
import { CleanTerms, consumeCleanMarker } from '../queue/clean-marker';
import { indexRefDeltas } from '../queue/ref-deltas';
import type { SegmentDigests } from '../queue/walk-digest';
import type { StartupWalk } from './presence';
import { log } from './log';
import { queueLabel, readQueueName } from '../queue/queue-name';
import { KeyedSerialQueues } from '../util/serial-queue';
import { vhostLayout } from './data-layout';

export interface VhostState {
  vhost: string;
  dir: string;
  queuesDir: string;
  store: MessageStore;
  transient: MessageStore;
  /** Queues whose clean marker START consumed, with its terms: their index needs no body checks. */
  cleanKeys: Map<string, CleanTerms>;
  storeClean: boolean;
  /** How long START took to open the store (a non-clean one rebuilds it from the queue indexes). */
  openedMs: number;
  /** After a non-clean start whose counts fit in memory: what the walk tells the queues' first INITs (presence.ts). */
  walk?: StartupWalk;
}

export interface StoreSettings {
  index: string;
  fileSizeLimit: number;
  syncIntervalMs: number;
  /** Durability `write`: the stores fsync this long after an unsynced append (0: only when a sync asks). */
  backgroundSyncMs: number;
  /** Queue segment size configured (read back from a damaged layout.json on the ref-count walk). */
  segmentEntries?: number;
  /** Told each group-commit fsync's duration of a vhost's persistent store (metrics.ts). */
  onSync?: (vhost: string, seconds: number) => void;
}

async function listDirs(dir: string): Promise<string[]> {
  try {
    const ents = await fsp.readdir(dir, { withFileTypes: true });
    return ents.filter((e) => e.isDirectory()).map((e) => e.name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/**
 * Queue keys before 0.2 hashed (vhost, name) with the priority wrapper's
 * `<<Name,0,P>>` sub-queue names, so two queues could share one. The plugin
 * sends each queue's old key beside its new one; a directory under the old
 * key is renamed to the new key when the new one does not exist yet (the
 * first queue listed with that old key gets it). The store then sees client
 * refs it did not know and rebuilds its ref counts from the queue indexes,
 * once.
 */
async function migrateLegacyKeys(vhost: string, queuesDir: string, keys: readonly string[], legacyKeys: readonly string[], listed: Set<string>): Promise<void> {
  for (let i = 0; i < legacyKeys.length; i++) {
    const [key, old] = [keys[i], legacyKeys[i]];
    if (old === key || listed.has(old)) continue;
    const from = path.join(queuesDir, old);
    const to = path.join(queuesDir, key);
    if (!(await pathExists(from)) || (await pathExists(to))) continue;
    await fsp.rename(from, to);
    log('info', `queue ${queueLabel({ key: old, name: await readQueueName(to) })} in vhost '${vhost}': its state moved to its new key ${key}`);
  }
}


export class Vhosts {
  private readonly open = new Map<string, VhostState>();
  /** Serializes START/INIT/close per vhost. */
  private readonly chains = new KeyedSerialQueues();

  constructor(private readonly settings: StoreSettings) {}

  get(vhost: string): VhostState | undefined {
    return this.open.get(vhost);
  }

  all(): VhostState[] {
    return [...this.open.values()];
  }

  serial<T>(vhost: string, task: () => Promise<T>): Promise<T> {
    return this.chains.run(vhost, task);
  }

  /**
   * Opens the vhost's store for the given durable queues. Returns, per key,
   * whether that queue left clean recovery state. Queue state of queues not
   * listed is deleted (when `pruneUnlisted`). `legacyKeys[i]` is the key an
   * earlier Warren gave queue `keys[i]`: its directory is renamed first.
   */
  async start(vhost: string, dir: string, keys: readonly string[], legacyKeys: readonly string[] = [], pruneUnlisted = true): Promise<boolean[]> {
    const { warren: warrenDir, queues: queuesDir, store: storeDir, transient: transientDir, owner } = vhostLayout(dir);
    // 0700: nothing under a vhost's warren/ is for other users (the sidecar's umask makes its files 0600).
    await fsp.mkdir(queuesDir, { recursive: true, mode: 0o700 });
    await fsp.chmod(warrenDir, 0o700);
    // Tells `warren compact` and `warren verify` that the vhost is in use (they check the pid still runs).
    await fsp.writeFile(owner, `${process.pid}\n`);
    const listed = new Set(keys);
    await migrateLegacyKeys(vhost, queuesDir, keys, legacyKeys, listed);
    if (pruneUnlisted) {
      for (const k of await listDirs(queuesDir)) {
        if (!listed.has(k)) {
          const name = await readQueueName(path.join(queuesDir, k));
          log('info', `queue ${queueLabel({ key: k, name })} in vhost '${vhost}': removing its state, it is no longer a durable queue`);
          await fsp.rm(path.join(queuesDir, k), { recursive: true, force: true });
        }
      }
    }
    const clean: boolean[] = [];
    const cleanKeys = new Map<string, CleanTerms>();
    for (const k of keys) {
      const terms = await consumeCleanMarker(path.join(queuesDir, k));
      clean.push(terms !== undefined);
      if (terms) cleanKeys.set(k, terms);
    }
    const started = Date.now();
    let openedMs = 0;
    const seen = new Map<string, SegmentDigests>();
    // Both stores open at once (the transient one is wiped, a few ms): this is on the broker's boot path.
    const [opened, openedTransient] = await Promise.allSettled([
      MessageStore.open({
        dir: storeDir,
        fileSizeLimit: this.settings.fileSizeLimit,
        syncIntervalMs: this.settings.syncIntervalMs,
        backgroundSyncMs: this.settings.backgroundSyncMs,
        index: this.settings.index,
        clientRefs: [...cleanKeys.keys()],
        refDeltas: () => indexRefDeltas(queuesDir, keys, log, this.settings.segmentEntries, seen),
        log: (level, msg) => log(level, `vhost ${vhost} store: ${msg}`),
      }).then((s) => {
        openedMs = Date.now() - started;
        return s;
      }),
      MessageStore.open({
        dir: transientDir,
        fileSizeLimit: this.settings.fileSizeLimit,
        index: 'memory',
        writeHints: false, // emptied at every start: nothing to recover
        clientRefs: undefined, // start empty
        log: (level, msg) => log(level, `vhost ${vhost} transient store: ${msg}`),
      }),
    ]);
    if (opened.status === 'rejected' || openedTransient.status === 'rejected') {
      // The one that opened closes again; the vhost fails with the other's error.
      if (opened.status === 'fulfilled') await opened.value.close().catch(() => undefined);
      if (openedTransient.status === 'fulfilled') await openedTransient.value.close().catch(() => undefined);
      throw opened.status === 'rejected' ? opened.reason : (openedTransient as PromiseRejectedResult).reason;
    }
    const store = opened.value;
    const transient = openedTransient.value;
    store.onSync = (seconds) => this.settings.onSync?.(vhost, seconds);
    const storeClean = store.successfullyRecovered;
    const unfound = store.takeUnfound();
    const walk = unfound && seen.size ? { unfound, digests: seen } : undefined;
    log(
      'info',
      `vhost ${vhost}: store at ${storeDir} opened ${storeClean ? 'clean' : 'after a non-clean stop (rebuilt from queue indexes)'} in ${openedMs} ms; ` +
        `${keys.length} durable queues, ${cleanKeys.size} stopped cleanly`,
    );
    this.open.set(vhost, { vhost, dir, queuesDir, store, transient, cleanKeys, storeClean, openedMs, walk });
    return clean;
  }

  /** The vhost's state, opening it non-clean if START was not seen (the sidecar restarted under a running broker). */
  async ensure(vhost: string, dir: string): Promise<VhostState> {
    const cur = this.open.get(vhost);
    if (cur) return cur;
    const queuesDir = vhostLayout(dir).queues;
    const keys = await listDirs(queuesDir);
    log('warn', `vhost ${vhost}: queue init before vhost start; opening the store with the ${keys.length} queues found on disk`);
    await this.start(vhost, dir, keys, [], false);
    return this.open.get(vhost)!;
  }

  /** Closes a vhost's store. `clean` writes its clean-shutdown state. */
  async close(vhost: string): Promise<void> {
    const st = this.open.get(vhost);
    if (!st) return;
    this.open.delete(vhost);
    await st.store.close();
    await st.transient.close();
    await fsp.rm(vhostLayout(st.dir).owner, { force: true });
  }
}

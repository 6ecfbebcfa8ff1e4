/**
 * Where Warren keeps a vhost's data: the one module that knows these names.
 * RabbitMQ gives each vhost a directory, `<node data dir>/msg_stores/vhosts/<name>`
 * (rabbit_vhost:msg_store_dir_path/1); Warren's files live in its `warren/`:
 *
 *     warren/store/          the persistent message store (src/store)
 *     warren/transient/      the transient store, wiped at every start
 *     warren/queues/<key>/   one queue index per durable queue (src/queue)
 *     warren/sidecar.pid     the pid of the sidecar that has the vhost open (removed at its close)
 *
 * What is inside each is its owner's (docs/FORMATS.md shows the whole tree).
 */
import * as path from 'path';

/** The directory holding every vhost's directory, under a node's data directory. */
export function vhostsDirOf(nodeDataDir: string): string {
  return path.join(nodeDataDir, 'msg_stores', 'vhosts');
}

export interface VhostLayout {
  /** `warren/`: nothing in it is for other users (0700). */
  warren: string;
  store: string;
  transient: string;
  queues: string;
  /** Holds the pid of the sidecar that has the vhost open: offline tools refuse a store in use. */
  owner: string;
}

export function vhostLayout(vhostDir: string): VhostLayout {
  const warren = path.join(vhostDir, 'warren');
  return { warren, store: path.join(warren, 'store'), transient: path.join(warren, 'transient'), queues: path.join(warren, 'queues'), owner: path.join(warren, 'sidecar.pid') };
}

/** The queue index directory of the durable queue `key` of the vhost at `vhostDir`. */
export function queueDirOf(vhostDir: string, key: string): string {
  return path.join(vhostLayout(vhostDir).queues, key);
}

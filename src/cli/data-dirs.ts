/**
 * What a DIR given to `warren inspect|verify|compact` names: a broker's data
 * directory (the `./var` of `npm start`, a node's mnesia dir: every vhost in
 * it), a vhost's message-store directory, or one vhost's `warren/` directory.
 * And whether a sidecar has it open now.
 */
import * as fs from 'fs';
import { promises as fsp } from 'fs';
import * as path from 'path';
import { vhostLayout, VhostLayout } from '../sidecar/data-layout';
import { pidFileProcess } from './proc';

export class DataDirError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DataDirError';
  }
}

export interface VhostTarget extends VhostLayout {
  /** The vhost's message-store directory (`.../msg_stores/vhosts/<name>`). */
  vhostDir: string;
  /** The vhost's name, from RabbitMQ's `.vhost` file in its directory (undefined if absent). */
  vhost?: string;
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function target(vhostDir: string): VhostTarget {
  let vhost: string | undefined;
  try {
    vhost = fs.readFileSync(path.join(vhostDir, '.vhost'), 'utf8');
  } catch {
    vhost = undefined;
  }
  return { ...vhostLayout(vhostDir), vhostDir, vhost };
}

/** Every vhost with Warren data under `dir`, searched down to `depth` levels. */
export async function findVhosts(dir: string, depth = 4): Promise<VhostTarget[]> {
  const abs = path.resolve(dir);
  if (!isDir(abs)) throw new DataDirError(`${abs}: no such directory`);
  if (path.basename(abs) === 'warren' && (isDir(path.join(abs, 'store')) || isDir(path.join(abs, 'queues')))) return [target(path.dirname(abs))];
  if (isDir(path.join(abs, 'warren', 'store')) || isDir(path.join(abs, 'warren', 'queues'))) return [target(abs)];
  const found: VhostTarget[] = [];
  const walk = async (d: string, left: number): Promise<void> => {
    const vhosts = path.join(d, 'msg_stores', 'vhosts');
    if (isDir(vhosts)) {
      for (const name of (await fsp.readdir(vhosts)).sort()) {
        const v = path.join(vhosts, name);
        if (isDir(path.join(v, 'warren'))) found.push(target(v));
      }
      return;
    }
    if (left === 0) return;
    let ents: fs.Dirent[];
    try {
      ents = await fsp.readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents.sort((a, b) => a.name.localeCompare(b.name))) if (e.isDirectory()) await walk(path.join(d, e.name), left - 1);
  };
  await walk(abs, depth);
  if (found.length === 0) throw new DataDirError(`${abs} holds no Warren data (looked for msg_stores/vhosts/*/warren under it, and for a vhost's warren/ directory)`);
  return found;
}

/** The pid of the sidecar that has the vhost open now, or null (none, or the one that wrote the file is gone). */
export function sidecarUsing(t: VhostTarget): number | null {
  return pidFileProcess(t.owner, /sidecar/);
}

/** A display name for the vhost: its name if RabbitMQ's `.vhost` file says it, else its directory. */
export function vhostLabel(t: VhostTarget): string {
  return t.vhost !== undefined ? `vhost ${JSON.stringify(t.vhost)}` : `vhost dir ${path.basename(t.vhostDir)}`;
}

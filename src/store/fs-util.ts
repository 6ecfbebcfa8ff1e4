import { promises as fsp } from 'fs';
import * as path from 'path';
import { createHash } from 'crypto';

/** fsync a directory so that creations, renames and deletions in it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes `data` to `file` so that a crash leaves either the old or the new content. */
export async function writeFileAtomic(file: string, data: Buffer | string): Promise<void> {
  const tmp = `${file}.tmp`;
  const fh = await fsp.open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsp.rename(tmp, file);
  await fsyncDir(path.dirname(file));
}

/** True if something (file, directory, link) is at `p`; only ENOENT means no. */
export async function pathExists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Reads a file and deletes it (state that must be trusted at most once). undefined if absent. */
export async function takeFile(file: string): Promise<Buffer | undefined> {
  let data: Buffer;
  try {
    data = await fsp.readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  await fsp.rm(file, { force: true });
  return data;
}

/** JSON with a digest line, so a garbled file is recognised as such. */
export function sealJson(value: unknown): string {
  const body = JSON.stringify(value);
  return `${createHash('sha256').update(body).digest('hex')}\n${body}`;
}

export function unsealJson(data: Buffer | undefined): unknown {
  if (!data) return undefined;
  const text = data.toString('utf8');
  const nl = text.indexOf('\n');
  if (nl < 0) return undefined;
  const body = text.slice(nl + 1);
  if (createHash('sha256').update(body).digest('hex') !== text.slice(0, nl)) return undefined;
  try {
    return JSON.parse(body) as unknown;
  } catch {
    return undefined;
  }
}

export async function unlinkIfExists(file: string): Promise<void> {
  await fsp.rm(file, { force: true });
}

/**
 * Durable-file helpers below every layer (store, indexes, queue): making a
 * directory entry durable, replacing a file atomically and durably, taking
 * (reading, then deleting) state trusted at most once, and telling absence
 * apart from an error.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';

/** fsync a directory so that creations, renames and deletions in it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes `data` to `file` so that a crash leaves either the old or the new content, durably: write, fsync, rename, fsync the directory. */
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

/** Reads a file and deletes it, for state trusted at most once; undefined, and the file left, if it cannot be read (any error: losing it costs only a scan). */
export async function takeFileIfReadable(file: string): Promise<Buffer | undefined> {
  let data: Buffer;
  try {
    data = await fsp.readFile(file);
  } catch {
    return undefined;
  }
  await fsp.rm(file, { force: true });
  return data;
}

/** A file's bytes, or undefined if it does not exist (any other error is thrown). Leaves the file alone. */
export async function readFileIfPresent(file: string): Promise<Buffer | undefined> {
  try {
    return await fsp.readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

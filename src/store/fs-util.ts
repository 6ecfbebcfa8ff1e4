import { promises as fsp } from 'fs';
import { createHash } from 'crypto';

// The durable-file helpers live below every layer; the store's modules take them from here too.
export { fsyncDir, pathExists, readFileIfPresent, takeFileIfReadable, writeFileAtomic } from '../util/durable-file';

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


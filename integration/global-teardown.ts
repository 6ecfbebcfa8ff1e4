import * as fs from 'fs';
import { Broker } from '../src/cli/broker';
import { TestState } from './harness';

export default async function globalTeardown(): Promise<void> {
  const file = process.env.WARREN_IT_STATE; // set by global-setup in this process
  if (!file || !fs.existsSync(file)) return;
  const state = JSON.parse(fs.readFileSync(file, 'utf8')) as TestState;
  await new Broker(state).stop();
  fs.rmSync(file, { force: true });
  if (!process.env.WARREN_KEEP_DATA) fs.rmSync(state.dataDir, { recursive: true, force: true });
}

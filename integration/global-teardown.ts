import * as fs from 'fs';
import { Broker } from '../src/cli/broker';
import { STATE_FILE, TestState } from './harness';

export default async function globalTeardown(): Promise<void> {
  if (!fs.existsSync(STATE_FILE)) return;
  const state = JSON.parse(fs.readFileSync(STATE_FILE, 'utf8')) as TestState;
  await new Broker(state).stop();
  fs.rmSync(STATE_FILE, { force: true });
  if (!process.env.WARREN_KEEP_DATA) fs.rmSync(state.dataDir, { recursive: true, force: true });
}

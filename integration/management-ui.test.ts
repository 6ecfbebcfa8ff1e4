/**
 * The management UI of the node `warren start` runs, driven in headless
 * Chromium (Debian's chromium, through playwright-core) as an operator uses
 * it: the banner names the UI; log in as guest, open a durable queue Warren
 * backs with a known backlog (250 persistent messages, 40 of them delivered
 * and unacknowledged), and read its counts off the page, and Warren's own
 * figures off the page's Warren panel (rabbit_warren_mgmt and warren.js, on
 * every version); on 3.10 the queue's record in the UI's API carries them too.
 * WARREN_UI_SCREENSHOT=path saves a screenshot of the queue's page there.
 */
import * as amqp from 'amqplib';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Browser, Page, chromium } from 'playwright-core';
import { rabbitmqSeries } from './harness';
import { WarrenNode, WarrenSetup, startNode, stopNode, warrenSetup } from './warren-start';

const CHROMIUM = '/usr/bin/chromium';
const PUBLISHED = 250;
const UNACKED = 40;
const BODY = 1024;
const Q = `ui-${process.pid}`;
const BASIC = `Basic ${Buffer.from('guest:guest').toString('base64')}`;

jest.setTimeout(300_000);

let base: string;
let setup: WarrenSetup;
let node: WarrenNode | undefined;
let conn: amqp.ChannelModel | undefined;
let browser: Browser | undefined;

beforeAll(async () => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-ui-'));
  setup = await warrenSetup(path.join(base, 'var'), 'warren-ui');
});

afterAll(async () => {
  await browser?.close();
  await conn?.close().catch(() => undefined);
  if (node) expect((await stopNode(node)).code).toBe(0);
  fs.rmSync(base, { recursive: true, force: true });
});

/** The cells of the first row whose header starts with `header`, in the tables under `scope`. */
async function rowCells(page: Page, scope: string, header: string): Promise<string[]> {
  const row = page
    .locator(`${scope} tr`)
    .filter({ has: page.locator('th', { hasText: new RegExp(`^\\s*${header}`) }) })
    .first();
  if ((await row.count()) === 0) return [];
  return (await row.locator('td').allTextContents()).map((t) => t.trim());
}

/**
 * Waits until the row's first cells read `want`: the page refreshes itself
 * (every 5 s) as the broker's statistics come in; each refresh is a response
 * from the management API, which is what this waits on. Fails naming what it read.
 */
async function waitForRow(page: Page, scope: string, header: string, want: string[]): Promise<void> {
  const deadline = Date.now() + 60_000;
  let cells = await rowCells(page, scope, header);
  while (!want.every((v, i) => cells[i] === v)) {
    if (Date.now() > deadline) throw new Error(`the "${header}" row under ${scope} never read ${JSON.stringify(want)}; it reads ${JSON.stringify(cells)}`);
    await page.waitForResponse((r) => r.url().includes('/api/queues/'), { timeout: 30_000 });
    await page.waitForLoadState();
    cells = await rowCells(page, scope, header);
  }
}

it(`shows a queue Warren backs, with its counts and a Warren panel of Warren's own figures, on RabbitMQ ${rabbitmqSeries()}`, async () => {
  node = await startNode(setup.env);
  const banner = node.output();
  expect(banner).toContain(`management UI             http://127.0.0.1:${setup.managementPort}/`);
  expect(banner).toContain(`Warren metrics            http://127.0.0.1:${setup.metricsPort}/metrics`);

  conn = await amqp.connect(setup.amqpUrl);
  const pub = await conn.createConfirmChannel();
  await pub.assertQueue(Q, { durable: true });
  for (let i = 0; i < PUBLISHED; i++) pub.sendToQueue(Q, Buffer.alloc(BODY, i & 0xff), { persistent: true });
  await pub.waitForConfirms();
  // a consumer that holds UNACKED deliveries unacknowledged
  const sub = await conn.createChannel();
  await sub.prefetch(UNACKED);
  let delivered = 0;
  const held = new Promise<void>((resolve) => {
    void sub.consume(Q, () => {
      if (++delivered === UNACKED) resolve();
    });
  });
  await held;

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-background-networking'] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 1600 } });
  // the page's own errors (a script of the UI or of Warren's extension that threw) are the test's failure
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  const consoleLines: string[] = [];
  page.on('console', (m) => {
    consoleLines.push(`${m.type()}: ${m.text().slice(0, 200)}`);
    if (m.type() === 'error') pageErrors.push(m.text());
  });
  const shot = process.env.WARREN_UI_SCREENSHOT ?? path.join(base, 'queue.png');
  const ui = `http://127.0.0.1:${setup.managementPort}/`;
  try {
    await page.goto(ui);
    await page.fill('input[name=username]', 'guest');
    await page.fill('input[name=password]', 'guest');
    await page.click('input[type=submit][value=Login]');
    // the overview: the UI has loaded and routes
    await page.waitForSelector('#main h1:has-text("Overview")', { timeout: 30_000 });

    await page.goto(`${ui}#/queues/${encodeURIComponent('/')}/${encodeURIComponent(Q)}`);
    await page.waitForSelector(`h1:has-text("${Q}")`, { timeout: 30_000 }).catch(async (e: Error) => {
      const main = await page.locator('#main').innerText().catch(() => '(no #main)');
      throw new Error(`the queue's page did not open: ${e.message}\npage errors: ${JSON.stringify(pageErrors)}\nat ${page.url()} the page reads:\n${main.slice(0, 2000)}`);
    });
    // Total, Ready, Unacked of the queue's Messages row; then its persistent count (the 5th column on every version)
    const ready = PUBLISHED - UNACKED;
    await waitForRow(page, '#main table.facts', 'Messages', [String(PUBLISHED), String(ready), String(UNACKED)]);
    expect((await rowCells(page, '#main table.facts', 'Messages'))[4]).toBe(String(PUBLISHED));

    // Warren's panel on the same page, from /api/warren/queues/VHOST/QUEUE (every version).
    await page.waitForSelector('#warren-panel h2:has-text("Warren")', { timeout: 30_000 });
    await waitForRow(page, '#warren-panel table', 'Ready', [String(ready)]);
    await waitForRow(page, '#warren-panel table', 'Unacknowledged', [String(UNACKED)]);
    await waitForRow(page, '#warren-panel table', 'Persistent messages', [String(PUBLISHED)]);
    expect((await rowCells(page, '#warren-panel table', 'Read-ahead'))[0]).toMatch(/^\d+ \/ \d+$/);
    const panel = await page.request.get(`${ui}api/warren/queues/%2F/${encodeURIComponent(Q)}`, { headers: { authorization: BASIC } });
    expect(panel.status()).toBe(200);
    expect(await panel.json()).toMatchObject({ backing_queue: 'warren', len: ready, pending_acks: UNACKED, persistent_count: PUBLISHED, warren_persistent_bytes: PUBLISHED * BODY, warren_expiring: 0 });
    // A queue Warren does not back gets no panel: its figures are {} (a quorum queue), and a queue that is not there is a 404.
    const qq = `${Q}-quorum`;
    await pub.assertQueue(qq, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
    const other = await page.request.get(`${ui}api/warren/queues/%2F/${encodeURIComponent(qq)}`, { headers: { authorization: BASIC } });
    expect([other.status(), await other.json()]).toEqual([200, {}]);
    expect((await page.request.get(`${ui}api/warren/queues/%2F/no-such-queue`, { headers: { authorization: BASIC } })).status()).toBe(404);
    expect((await page.request.get(`${ui}api/warren/queues/%2F/${encodeURIComponent(Q)}`)).status()).toBe(401);
    await pub.deleteQueue(qq);

    // The queue's record the page was drawn from (the UI's own API, with the page's login). RabbitMQ 3.10
    // passes the backing queue's status through, Warren's keys with it; 4.x's management agent keeps
    // only its `version` (as storage_version), which Warren does not report, so the record has neither.
    const record = await page.request.get(`${ui}api/queues/%2F/${encodeURIComponent(Q)}`, { headers: { authorization: BASIC } });
    expect(record.status()).toBe(200);
    const json = (await record.json()) as { messages_persistent: number; backing_queue_status?: Record<string, unknown>; storage_version?: unknown };
    expect(json.messages_persistent).toBe(PUBLISHED);
    if (rabbitmqSeries() === '3.10') {
      const bq = json.backing_queue_status!;
      expect(bq).toMatchObject({ backing_queue: 'warren', len: ready, pending_acks: UNACKED, persistent_count: PUBLISHED, warren_persistent_bytes: PUBLISHED * BODY, warren_expiring: 0 });
      expect(bq.warren_read_ahead).toEqual(expect.any(Number));
      expect(bq.warren_session).toEqual(expect.any(Number));
    } else {
      expect(json.backing_queue_status).toBeUndefined();
      expect(json.storage_version).toBeUndefined();
    }

    expect(pageErrors).toEqual([]);
  } catch (e) {
    // what the page showed, for the failure's reader
    await page.screenshot({ path: shot, fullPage: true }).catch(() => undefined);
    const get = (p: string): Promise<string> =>
      page.request
        .get(`${ui}api/${p}`, { headers: { authorization: BASIC } })
        .then((r) => r.text())
        .catch((x: Error) => x.message);
    const api = `console ${JSON.stringify(consoleLines.slice(-8))}; ${await get(`queues/%2F/${encodeURIComponent(Q)}`)}`;
    throw new Error(`${(e as Error).message}\npage errors: ${JSON.stringify(pageErrors)}; the page as it was: ${shot}; the queue's API record: ${api.slice(0, 3000)}`);
  }
  await page.screenshot({ path: shot, fullPage: true });
  expect(fs.statSync(shot).size).toBeGreaterThan(10_000);
});

// Drives Earshot's page in Debian's headless Chromium for tests/browser.rs.
//
//   node tests/browser/drive.mjs <base_url> <meeting> <token>
//
// The Rust test owns the server and publishes the transcript; this script owns the
// browser. They take turns over stdio: the script prints `@<step>` when the page has
// reached a state and waits for one JSON line on stdin saying what the Rust side did
// (`{"expect":[…final lines…]}`, `{"interim":"…"}`, `{"stats":true}`). Anything
// else it prints is log. Exit 0 only if every check held.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [base, meeting, token] = process.argv.slice(2);
if (!base || !meeting || !token) {
  console.error('usage: node drive.mjs <base_url> <meeting> <token>');
  process.exit(2);
}
const executablePath = process.env.EARSHOT_CHROMIUM || '/usr/bin/chromium';
const screenshotPath = process.env.EARSHOT_SCREENSHOT || '/tmp/earshot-page.png';
/** Longest wait for one page state; the Rust side bounds the whole run. */
const WAIT_MS = 15_000;
/** After the final reload, time for a duplicate to show up if the page let one in. */
const SETTLE_MS = 1_500;

// The network is closed: nothing may phone home, and no GPU or sandbox is available.
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const replies = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Announces a step and returns the Rust side's reply. */
async function step(name) {
  console.log(`@${name}`);
  const { value, done } = await replies.next();
  if (done) throw new Error(`stdin closed while waiting for the reply to @${name}`);
  return JSON.parse(value);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const userDataDir = mkdtempSync(join(tmpdir(), 'earshot-chromium-'));
const pageErrors = [];
/** Every transcript socket the page opened, by URL. */
const transcriptSockets = [];
let context;
let page;

/** The final lines as the page shows them. */
const lines = () => page.$$eval('#transcript li', (lis) => lis.map((li) => ({
  offset: li.dataset.offset ?? null,
  text: li.querySelector('.text')?.textContent ?? '',
})));

async function waitLines(expect, why) {
  try {
    await page.waitForFunction((want) => {
      const got = [...document.querySelectorAll('#transcript li .text')].map((n) => n.textContent);
      return JSON.stringify(got) === JSON.stringify(want);
    }, expect, { timeout: WAIT_MS });
  } catch {
    throw new Error(`${why}: expected lines ${JSON.stringify(expect)}, the page shows ${JSON.stringify(await lines())}`);
  }
}

async function waitConnected(what) {
  try {
    await page.waitForFunction(() => ['conn-meeting', 'conn-transcript']
      .every((id) => document.getElementById(id)?.dataset.state === 'open'), null, { timeout: WAIT_MS });
  } catch {
    const pills = await page.$$eval('.pill', (ps) => ps.map((p) => `${p.id}=${p.dataset.state} "${p.textContent.trim()}"`));
    throw new Error(`${what}: the page never showed both sockets connected (${pills.join(', ')})`);
  }
}

async function waitInterim(text) {
  await page.waitForFunction((t) => {
    const p = document.getElementById('interim');
    return !p.hidden && p.querySelector('.text')?.textContent === t;
  }, text, { timeout: WAIT_MS });
}

async function assertExactlyOnce(expect, when) {
  const got = await lines();
  const offsets = got.map((l) => l.offset);
  check(new Set(offsets).size === offsets.length && offsets.every(Boolean), `${when}: every line has its own offset: ${JSON.stringify(got)}`);
  check(JSON.stringify(got.map((l) => l.text)) === JSON.stringify(expect), `${when}: lines ${JSON.stringify(expect)} each once, in order; got ${JSON.stringify(got)}`);
}

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 860 },
    timeout: 30_000,
  });
  page = context.pages()[0] ?? await context.newPage();
  page.on('websocket', (ws) => {
    if (ws.url().includes('/api/v1/ws/transcript/')) transcriptSockets.push(ws.url());
  });
  page.on('pageerror', (e) => pageErrors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Uncaught/.test(m.text())) pageErrors.push(`console: ${m.text()}`);
  });

  // 1. A fresh browser: type the meeting and token into the form.
  const resp = await page.goto(base, { waitUntil: 'domcontentloaded' });
  check(resp?.status() === 200, `GET / answers 200 (got ${resp?.status()})`);
  await page.getByLabel('Meeting id').fill(meeting);
  await page.getByLabel('Subscribe token').fill(token);
  await page.getByRole('button', { name: 'Connect', exact: true }).click();
  await waitConnected('after Connect');
  let reply = await step('connected');

  // 2. An interim segment is one replaceable "typing" line; its final replaces it.
  await waitInterim(reply.interim);
  check((await lines()).length === 0, 'an interim segment is not a final line');
  reply = await step('interim');
  await waitLines(reply.expect, 'the first final segment');
  await page.waitForFunction(() => document.getElementById('interim').hidden, null, { timeout: WAIT_MS });
  await page.waitForSelector('#presence li[data-source="sys"][data-state="connected"]', { timeout: WAIT_MS });
  let shown = reply.expect;

  // 3. Reload: the stored line is there before any socket opens, then live resumes.
  await page.reload({ waitUntil: 'domcontentloaded' });
  await assertExactlyOnce(shown, 'right after the reload, from storage');
  check(await page.getByLabel('Meeting id').inputValue() === meeting, 'the meeting id is remembered');
  await waitConnected('after the reload');
  const resumedFrom = new URL(transcriptSockets.at(-1)).searchParams.get('since');
  const [stored] = await lines();
  check(resumedFrom === stored.offset, `the reloaded page resumes after its newest line (since=${resumedFrom}, newest ${stored.offset})`);
  check(!transcriptSockets.at(-1).includes(token), 'the token is not in the socket URL');
  reply = await step('reloaded');
  await waitLines(reply.expect, 'a live segment after the reload');
  shown = reply.expect;

  // 4. Leave; a segment is published while no page is open; come back: only the
  //    transcript socket's `?since=` replay can deliver it.
  await page.goto('about:blank');
  reply = await step('away');
  await page.goto(base, { waitUntil: 'domcontentloaded' });
  await waitConnected('coming back');
  await waitLines(reply.expect, 'coming back after a segment was published while the page was away (history replay after ?since=)');
  shown = reply.expect;

  // 5. One more reload: every line exactly once, in order, nothing replayed twice.
  await page.reload({ waitUntil: 'domcontentloaded' });
  await waitConnected('after the second reload');
  await page.waitForTimeout(SETTLE_MS);
  await assertExactlyOnce(shown, 'after the second reload');

  // 6. Talk time, speaking, typing: what a person watching the meeting sees. The Rust
  //    side also delivers the newest segment a second time, before the interim one.
  reply = await step('resumed');
  await page.waitForSelector('.bar-row[data-kind="mic"] .bar span', { timeout: WAIT_MS });
  await page.waitForSelector('#presence li[data-source="mic"][data-speaking="true"]', { timeout: WAIT_MS });
  await waitInterim(reply.interim);
  await waitLines(reply.expect, 'a new segment delivered twice');
  await page.waitForTimeout(SETTLE_MS);
  await assertExactlyOnce(reply.expect, 'after a segment was delivered twice');
  await page.screenshot({ path: screenshotPath, fullPage: true });
  console.log(`screenshot: ${screenshotPath}`);

  // 7. A browser with nothing stored, opened from a link with the fragment: it connects,
  //    leaves no token in the address bar, and fetches the whole retained history.
  reply = await step('fresh');
  await page.evaluate(() => localStorage.clear());
  await page.goto('about:blank');
  await page.goto(`${base}#meeting=${encodeURIComponent(meeting)}&token=${encodeURIComponent(token)}`, { waitUntil: 'domcontentloaded' });
  await waitConnected('from the URL fragment');
  check(new URL(page.url()).hash === '', `the fragment is removed from the address bar (${page.url()})`);
  check(await page.getByLabel('Meeting id').inputValue() === meeting, 'the fragment fills the meeting id');
  await waitLines(reply.expect, 'a fresh browser (history from 0-0)');
  await page.waitForTimeout(SETTLE_MS);
  await assertExactlyOnce(reply.expect, 'a fresh browser');

  check(pageErrors.length === 0, `no page errors:\n${pageErrors.join('\n')}`);
  await step('done');
} catch (e) {
  console.error(`driver failed: ${e.stack || e}`);
  if (pageErrors.length) console.error(pageErrors.join('\n'));
  if (page) {
    const failShot = screenshotPath.replace(/\.png$/, '-failure.png');
    await page.screenshot({ path: failShot, fullPage: true }).then(() => console.error(`failure screenshot: ${failShot}`), () => {});
  }
  process.exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  process.stdin.destroy();
}

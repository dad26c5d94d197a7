// Drives Earshot's page in Debian's headless Chromium for tests/browser.rs.
//
//   node tests/browser/drive.mjs <base_url> <meeting> <token>
//
// The Rust test owns the server and publishes the transcript; this script owns the
// browser. They take turns over stdio: the script prints `@<step>` when the page has
// reached a state and waits for one JSON line on stdin saying what the Rust side did
// (`{"expect":[…final lines…]}`, `{"interims":[{source,speaker,text}…]}`,
// `{"final":"mic"}`). Anything else it prints is log. Exit 0 only if every check held.

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
/** How often a condition checked from the driver's side is looked at again. */
const POLL_MS = 50;

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
const lines = () => page.$$eval('#transcript li:not(.interim)', (lis) => lis.map((li) => ({
  offset: li.dataset.offset ?? null,
  text: li.querySelector('.text')?.textContent ?? '',
})));

/** Every line of the transcript list, finals and interims, in page order. `probe` is
 *  the driver's own mark (see markInterims): kept only if the page kept that element. */
const listSnapshotFn = () => [...document.querySelectorAll('#transcript > li')].map((li) => ({
  kind: li.classList.contains('interim') ? 'interim' : 'final',
  source: li.querySelector('.src')?.dataset.source ?? null,
  text: li.querySelector('.text')?.textContent ?? '',
  probe: li.dataset.probe ?? null,
}));
const listSnapshot = () => page.evaluate(listSnapshotFn);

async function waitLines(expect, why) {
  try {
    await page.waitForFunction((want) => {
      const got = [...document.querySelectorAll('#transcript li:not(.interim) .text')].map((n) => n.textContent);
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

/** The open interim lines, in page order, with how they look. */
const interimLines = () => page.$$eval('#transcript > li.interim', (lis) => lis.map((li) => {
  const text = li.querySelector('.text');
  const muted = getComputedStyle(document.getElementById('transcript-empty')).color;
  const look = getComputedStyle(li);
  return {
    source: li.dataset.source,
    speaker: li.querySelector('.speaker')?.textContent ?? null,
    text: text?.textContent ?? '',
    greyed: look.color === muted && look.fontStyle === 'italic',
    ellipsis: getComputedStyle(text, '::after').content,
    ariaHidden: li.getAttribute('aria-hidden'),
  };
}));

/** Waits until exactly `want` ([{source, speaker, text}], in order) are the open interim
 *  lines, and checks each is greyed, labelled with its speaker and hidden from screen readers. */
async function waitInterims(want, why) {
  try {
    await page.waitForFunction((w) => {
      const got = [...document.querySelectorAll('#transcript > li.interim')]
        .map((li) => ({ source: li.dataset.source, text: li.querySelector('.text')?.textContent }));
      return JSON.stringify(got) === JSON.stringify(w.map(({ source, text }) => ({ source, text })));
    }, want, { timeout: WAIT_MS });
  } catch {
    throw new Error(`${why}: expected interim lines ${JSON.stringify(want)}, the page shows ${JSON.stringify(await interimLines())}`);
  }
  for (const [i, got] of (await interimLines()).entries()) {
    check(got.greyed, `${why}: the ${got.source} interim is greyed (muted, italic): ${JSON.stringify(got)}`);
    check(got.ellipsis === '" …"', `${why}: the ${got.source} interim ends in "…": ${JSON.stringify(got)}`);
    check(got.speaker === `${want[i].speaker}:`, `${why}: the ${got.source} interim is labelled with its speaker ${want[i].speaker}: ${JSON.stringify(got)}`);
    check(got.ariaHidden === 'true', `${why}: the ${got.source} interim is not announced: ${JSON.stringify(got)}`);
  }
}

/** Marks every open interim element, so a later snapshot shows whether the page kept it. */
const markInterims = () => page.$$eval('#transcript > li.interim', (lis) => lis.forEach((li) => { li.dataset.probe = li.dataset.source; }));

/** After `reply.final`'s final segment: the list is `before` with that source's interim
 *  replaced, at its position, by the final line (the newest of `reply.expect`), and
 *  every other line — the other source's interim element included — unchanged. */
async function waitFinalInPlace(before, reply, why) {
  const source = reply.final;
  check(before.some((l) => l.kind === 'interim' && l.source === source), `${why}: a ${source} interim was open before its final`);
  const want = before.map((l) => (l.kind === 'interim' && l.source === source
    ? { kind: 'final', source, text: reply.expect.at(-1), probe: null }
    : l));
  // Polled from here: the page's CSP (no 'unsafe-eval') refuses string predicates.
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const got = await listSnapshot();
    if (JSON.stringify(got) === JSON.stringify(want)) return;
    if (Date.now() > deadline) throw new Error(`${why}: expected the list ${JSON.stringify(want)}, the page shows ${JSON.stringify(got)}`);
    await page.waitForTimeout(POLL_MS);
  }
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

  // 2. Two people talk at once: each source has its own greyed interim line, both
  //    visible; each final replaces its own source's line in place, the other stays.
  await waitInterims(reply.interims, 'mic and sys interims at once');
  check((await lines()).length === 0, 'interim segments are not final lines');
  await markInterims();
  let before = await listSnapshot();
  reply = await step('interims');
  await waitFinalInPlace(before, reply, 'the mic final, with the sys interim still open');
  await waitLines(reply.expect, 'the first final segment');
  before = await listSnapshot();
  reply = await step('mic-final');
  await waitFinalInPlace(before, reply, 'the sys final');
  await waitLines(reply.expect, 'the second final segment');
  check((await interimLines()).length === 0, 'no interim line is left once both finals arrived');
  check(await page.locator('#transcript-empty').isHidden(), 'the "Nothing said yet" note is hidden');
  await page.waitForSelector('#presence li[data-source="sys"][data-state="connected"]', { timeout: WAIT_MS });
  let shown = reply.expect;

  // 3. Reload: the stored line is there before any socket opens, then live resumes.
  await page.reload({ waitUntil: 'domcontentloaded' });
  await assertExactlyOnce(shown, 'right after the reload, from storage');
  check(await page.getByLabel('Meeting id').inputValue() === meeting, 'the meeting id is remembered');
  await waitConnected('after the reload');
  const resumedFrom = new URL(transcriptSockets.at(-1)).searchParams.get('since');
  const stored = (await lines()).at(-1);
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
  //    side also delivers the newest segment a second time, before the interim ones.
  reply = await step('resumed');
  await page.waitForSelector('.bar-row[data-kind="mic"] .bar span', { timeout: WAIT_MS });
  await page.waitForSelector('#presence li[data-source="mic"][data-speaking="true"]', { timeout: WAIT_MS });
  await waitInterims(reply.interims, 'sys then mic interims after the reloads');
  await waitLines(reply.expect, 'a new segment delivered twice');
  await page.waitForTimeout(SETTLE_MS);
  await assertExactlyOnce(reply.expect, 'after a segment was delivered twice');
  await page.screenshot({ path: screenshotPath, fullPage: true });
  console.log(`screenshot: ${screenshotPath}`);

  // The sys line opened first: the mic final takes the mic line's place below it,
  // rather than jumping above the still-open sys line.
  await markInterims();
  before = await listSnapshot();
  reply = await step('overlap');
  await waitFinalInPlace(before, reply, 'the mic final below an open sys interim');
  await assertExactlyOnce(reply.expect, 'after the mic final below an open sys interim');

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

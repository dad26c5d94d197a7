// Drives Earshot's page in Debian's headless Chromium for tests/token_lifetime.rs: the page
// is opened with a short-lived token and a token URL, and must renew the token on both open
// sockets before it expires and stay connected past the old token's exp.
//
//   node tests/browser/token_refresh.mjs
//
// Prints `@ready` once the browser runs (a cold start takes seconds, longer than the token
// lives), then reads one JSON line `{"url": <page url with fragment>, "exp_ms": <the token's
// exp>}`; prints `renewed` when both sockets showed the renewal, `ok` at the end. Exit 0 only
// if every check held.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const input = createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
const executablePath = process.env.EARSHOT_CHROMIUM || '/usr/bin/chromium';
/** Longest wait for the renewal: a 3 s token is renewed after about 2 s. */
const WAIT_MS = 15_000;
/** How long past the old token's exp the sockets must stay open. */
const PAST_EXP_MS = 2_000;
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const PILLS = ['conn-meeting', 'conn-transcript'];

const userDataDir = mkdtempSync(join(tmpdir(), 'earshot-chromium-'));
let context;
try {
  // The page's CSP allows same-origin fetches only (connect-src 'self'): a deployment serves
  // its token URL under Earshot's origin (its reverse proxy). The test's token server has a
  // port of its own, so this page runs with the CSP bypassed; the rest is the page's code.
  context = await chromium.launchPersistentContext(userDataDir, { executablePath, args: ARGS, headless: true, bypassCSP: true });
  const page = context.pages()[0] ?? await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  console.log('@ready');
  const { value, done } = await lines.next();
  if (done) throw new Error('stdin closed before the page URL came');
  const { url, exp_ms: oldExp } = JSON.parse(value);
  await page.goto(url);
  const pills = () => page.$$eval('.pill', (ps) => ps.map((p) => `${p.id}=${p.dataset.state} "${p.textContent.trim()}"`).join(', '));
  try {
    await page.waitForFunction((ids) => ids.every((id) => {
      const p = document.getElementById(id);
      return p?.dataset.state === 'open' && p.textContent.includes('token renewed');
    }), PILLS, { timeout: WAIT_MS });
  } catch {
    throw new Error(`the page never showed both sockets renewed (${await pills()})`);
  }
  console.log('renewed');
  const wait = Number(oldExp) + PAST_EXP_MS - Date.now();
  if (wait > 0) await page.waitForTimeout(wait);
  const states = await page.$$eval('.pill', (ps) => ps.map((p) => p.dataset.state));
  if (!states.every((s) => s === 'open')) throw new Error(`a socket did not outlive the old token (${await pills()})`);
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  console.log('ok');
} catch (e) {
  console.error(String(e?.stack || e));
  process.exitCode = 1;
} finally {
  input.close();
  await context?.close();
  rmSync(userDataDir, { recursive: true, force: true });
}

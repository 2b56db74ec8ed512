// Drives the console in Debian's Chromium (playwright-core, no browser
// download) the way an operator would, and prints what it saw as one JSON
// line. Every step saves a screenshot into OUT_DIR.
//
// Usage: node console.cjs API_URL ADMIN_TOKEN SIM_URL STRIPE_KEY CUSTOMER REJECT_FILE OUT_DIR
// (CONSOLE_README=1: live traffic and a minute of chart points first, for
// the README's pictures)
//
// 1. signs in with the admin token;
// 2. resumes the paused `stripe` source on its page and watches the
//    overview's phase go from backfilling to live;
// 3. updates CUSTOMER upstream and opens its history from the changes page;
// 4. redrives the dead letter of the sink `hooks` once the endpoint accepts
//    it again (REJECT_FILE removed);
// 5. rewinds `hooks` to the customer's update and sees its delivered count grow.
'use strict';

const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const [api, token, sim, stripeKey, customer, rejectFile, outDir] = process.argv.slice(2);
const seen = {};

async function until(what, check, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main() {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  const page = await browser.newPage({ viewport: { width: 1360, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const shot = (name) => page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });

  // 1. sign in: a wrong token is refused, the admin token opens the overview
  await page.goto(`${api}/`);
  await page.fill('#token', 'not-the-token');
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#login .error:text("That is not the admin token.")');
  await shot('login');
  await page.fill('#token', token);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('tr[data-source="stripe"]');
  seen.paused_at_start = (await page.textContent('tr[data-source="stripe"] td.phase')).trim();

  // 2. resume the source and watch it backfill, then go live
  await page.goto(`${api}/#/sources/stripe`);
  await page.click('button:text("Resume")');
  await page.goto(`${api}/#/`);
  const phases = (seen.phases = []);
  await until('the source to be live', async () => {
    const phase = (await page.textContent('tr[data-source="stripe"] td.phase').catch(() => '')).trim();
    if (phase && phases[phases.length - 1] !== phase) phases.push(phase);
    return phase === 'live';
  });
  seen.phases = phases;
  await page.waitForSelector('.chart');
  if (process.env.CONSOLE_README === '1') {
    // for the README's picture: live traffic, and charts with a minute of points
    await fetch(`${sim}/__sim/traffic`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"mutations_per_sec": 8}' });
    await until('a minute of chart points', async () => {
      const points = await page.getAttribute('.chart polyline', 'points').catch(() => '');
      return (points || '').trim().split(' ').length >= 7;
    }, 120000);
  }
  await shot('overview');
  if (process.env.CONSOLE_README === '1') {
    await fetch(`${sim}/__sim/traffic`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"mutations_per_sec": 0}' });
  }

  // 3. an update upstream, then the object's history from the changes page
  const response = await fetch(`${sim}/v1/customers/${customer}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${stripeKey}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: 'name=Grace+Hopper',
  });
  if (!response.ok) throw new Error(`the simulator refused the update: ${response.status}`);
  await page.goto(`${api}/#/changes`);
  await page.fill('#filters input[name=object_id]', customer);
  await page.click('#filters button[type=submit]');
  await until('the customer update in the change log', async () => {
    await page.click('#filters button[type=submit]');
    return (await page.locator('#changes tbody tr').count()) >= 2;
  });
  await page.click(`#changes a:text("${customer}")`);
  await page.waitForSelector('.step');
  seen.history_steps = await page.locator('.step').count();
  seen.history_after = (await page.textContent('.step:last-child td.after')).trim();
  seen.update_change = await page.getAttribute('.step:last-child', 'data-change');
  await shot('history');

  // 4. the endpoint accepts again: redrive the dead letter
  await page.goto(`${api}/#/sinks/hooks`);
  await page.waitForSelector('#dead-letters tr[data-dead-letter]');
  seen.dead_letter = await page.getAttribute('#dead-letters tr[data-dead-letter]', 'data-dead-letter');
  seen.dead_letter_change = (await page.textContent('#dead-letters tr[data-dead-letter] td:nth-child(2)')).trim();
  await shot('dead-letters');
  fs.rmSync(rejectFile, { force: true });
  // the traffic of the README's run may have parked more changes of the customer
  await page.click(process.env.CONSOLE_README === '1' ? '#redrive-all' : '#dead-letters button.redrive');
  await page.waitForSelector('#no-dead-letters', { timeout: 30000 });

  // 5. rewind to the update: the delivered count grows
  const delivered = async () => Number((await page.textContent('#delivered .value')).replace(/[^0-9]/g, ''));
  seen.delivered_before = await delivered();
  await page.fill('#rewind input[name=to]', seen.update_change);
  await page.click('#rewind button[type=submit]');
  seen.delivered_after = await until('the delivered count to grow', async () => {
    const now = await delivered();
    return now > seen.delivered_before ? now : 0;
  }, 30000);
  await shot('sink');

  seen.page_errors = errors;
  await browser.close();
  console.log(JSON.stringify(seen));
}

main().catch((e) => {
  console.error(e.stack || String(e));
  console.log(JSON.stringify({ ...seen, failed: String(e.message || e) }));
  process.exit(1);
});

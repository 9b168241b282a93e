// A partner site pastes the widget's one script tag (the snippet of www/partner.html) on a page
// of its own origin: the card appears, runs nothing before consent, and once the visitor
// agrees it trains with the network `cargo xtask test` started and shows its progress.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, launchBrowser, pageErrors, screenshot, serveNetwork } from './harness.mjs';

let server, partner, browser;

before(async () => {
  ({ server } = await serveNetwork());
  // The partner: another origin (another port) serving the sample page, its snippet pointed at
  // the tabswarm server as a partner's would be.
  const sample = readFileSync(join(ROOT, 'www/partner.html'), 'utf8');
  assert.ok(sample.includes('src="/www/widget.js"'), 'the sample partner page lost its snippet');
  const page = sample.replace('src="/www/widget.js"', `src="${server.url}/www/widget.js"`);
  partner = createServer((req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(page));
  await new Promise((ok) => partner.listen(0, '127.0.0.1', ok));
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.close();
  await new Promise((ok) => (partner ? partner.close(ok) : ok()));
});

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

test('one script tag puts a card on a partner page; after consent it trains and shows progress', async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  // In every frame, before its scripts: count the Web Workers it makes.
  await page.addInitScript(() => {
    window.workersMade = 0;
    const Native = window.Worker;
    window.Worker = class extends Native {
      constructor(...args) { super(...args); window.workersMade += 1; }
    };
  });
  await page.goto(`http://127.0.0.1:${partner.address().port}/`);
  await page.waitForSelector('tabswarm-card');
  let card;
  for (let i = 0; i < 120 && !card; i++, await sleep(250)) {
    card = page.frames().find((f) => f.url().startsWith(`${server.url}/www/card.html`));
  }
  assert.ok(card, `no card frame; frames: ${page.frames().map((f) => f.url()).join(', ')}`);
  await card.waitForFunction(() => window.ready === true, null, { timeout: 60_000 });
  await sleep(500);
  assert.equal(await card.evaluate(() => window.workersMade), 0, 'the card started workers before consent');
  assert.equal(await card.evaluate(() => window.tabStatus ?? null), null, 'the card started a peer before consent');

  await card.click('#join');
  const deadline = Date.now() + 240_000;
  let s;
  while (Date.now() < deadline) {
    s = await card.evaluate(() => window.tabStatus ?? null);
    if (s?.state === 'running' && s.updates_announced >= 1 && s.history.length >= 1) break;
    await sleep(250);
  }
  assert.ok(s?.state === 'running' && s.updates_announced >= 1, `the card did not train: ${JSON.stringify(s)}`);
  // The card itself shows it (what the visitor sees, not only the status object).
  const shown = await card.evaluate(() => ({
    height: Number(document.getElementById('height').textContent),
    announced: Number(document.getElementById('announced').textContent),
    accuracy: document.getElementById('accuracy').textContent,
  }));
  assert.ok(shown.height > 0, `card shows height ${shown.height}`);
  assert.ok(shown.announced >= 1, `card shows ${shown.announced} updates announced`);
  assert.match(shown.accuracy, /%/, 'card shows no accuracy');
  await screenshot(page, 'partner-widget');
  assert.deepEqual(pageErrors(errors), [], 'page errors');
  await page.close();
});

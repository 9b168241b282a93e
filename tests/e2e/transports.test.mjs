// webrtc-direct and websocket, one at a time (`?transport=`): a tab on either keeps up with
// the chain, and we measure what each costs. libp2p-webrtc-websys is known to stall stream
// wakeups for seconds in headless Chromium; the ping round trips per transport and the page's
// event-loop lag are printed (figures, not asserts: machines are noisy). What is asserted:
// the tab follows the chain on either transport.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, openPage, pageErrors, serveNetwork, until } from './harness.mjs';

let server, browser, network;

before(async () => {
  ({ server, network } = await serveNetwork());
  browser = await launchBrowser();
});
after(async () => { await browser?.close(); await server?.close(); });

const nodeHeight = async () => (await (await fetch(network.status[0])).json()).height;

// How late the page's timers fire over `ms`: a blocked main thread shows here.
function eventLoopLag(ms) {
  return new Promise((done) => {
    const lags = [];
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      lags.push(Math.max(0, now - last - 50));
      last = now;
    }, 50);
    setTimeout(() => {
      clearInterval(timer);
      lags.sort((a, b) => a - b);
      const at = (q) => lags[Math.max(0, Math.ceil(q * lags.length) - 1)] ?? 0;
      done({ p50_ms: at(0.5), p99_ms: at(0.99), max_ms: lags.at(-1) ?? 0 });
    }, ms);
  });
}

for (const transport of ['webrtc-direct', 'websocket']) {
  test(`a tab on ${transport} alone keeps up with the chain (round trips measured)`, async () => {
    const context = await browser.newContext();
    const { page, errors } = await openPage(context, server, `/www/index.html?transport=${transport}`);
    await page.click('#join');
    await until(page, 'catch-up', 120_000, () => window.tabStatus?.state === 'running');
    const s = await page.evaluate(() => window.tabStatus);
    assert.equal(s.transport === 'relay' ? transport : s.transport, transport, 'connected over another transport');
    await until(page, 'ping samples', 60_000, (t) => window.tabStatus.rtt[t]?.samples >= 10, transport);

    const h0 = await nodeHeight();
    const lag = await page.evaluate(eventLoopLag, 10_000);
    const [tab, node] = [await page.evaluate(() => window.tabStatus), await nodeHeight()];
    assert.ok(node > h0, 'the network did not commit');
    // Following: within a few heights of the node after 10 s on this transport alone.
    assert.ok(tab.height >= node - 5, `tab at height ${tab.height}, node at ${node}`);
    console.log(`# ${transport}: ping ${JSON.stringify(tab.rtt[transport])}; event-loop lag ${JSON.stringify(lag)}; `
      + `heights ${h0} -> ${node}, tab at ${tab.height}`);
    assert.deepEqual(pageErrors(errors), [], 'page errors');
    await context.close();
  });
}

test('a network that cannot be reached is explained on the page', async () => {
  const context = await browser.newContext();
  // A well-formed address nobody listens on (port 9 on loopback), with a valid peer id.
  const someone = network.bootstrap[0].split('/p2p/').at(-1);
  const dead = `/ip4/127.0.0.1/tcp/9/ws/p2p/${someone}`;
  const { page } = await openPage(context, server, `/www/index.html?bootstrap=${encodeURIComponent(dead)}`);
  await page.click('#join');
  await until(page, 'the problem shown', 60_000, () => !document.getElementById('problem').hidden);
  assert.match(await page.locator('#problem').textContent(), /no peer reachable/);
  await context.close();
});

test('a browser without WebAssembly SIMD is told why it cannot join', async () => {
  const context = await browser.newContext();
  // This browser has SIMD: pretend it has not, as an old one would answer the page's probe.
  const noSimd = () => { WebAssembly.validate = () => false; };
  const { page } = await openPage(context, server, '/www/index.html', { init: noSimd });
  assert.ok(await page.locator('#join').isDisabled(), 'the join button stays enabled');
  assert.match(await page.locator('#problem').textContent(), /SIMD/);
  await context.close();
});

test('the page fits a phone-sized screen', async () => {
  const context = await browser.newContext({ viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true });
  const { page } = await openPage(context, server, '/www/index.html');
  await page.click('#join');
  await until(page, 'the running view', 60_000, () => !document.getElementById('running').hidden
    && !document.getElementById('try').hidden);
  const fit = await page.evaluate(() => ({
    page: document.documentElement.scrollWidth,
    view: window.innerWidth,
    pad: document.getElementById('pad').getBoundingClientRect().right,
    chart: document.getElementById('chart').getBoundingClientRect().right,
  }));
  assert.ok(fit.page <= fit.view, `the page scrolls sideways: ${fit.page} px wide on a ${fit.view} px screen`);
  assert.ok(fit.pad <= fit.view && fit.chart <= fit.view, `cut off: ${JSON.stringify(fit)}`);
  await context.close();
});

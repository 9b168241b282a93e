// A real training step in WebAssembly, in headless Chromium, on the real MNIST digits.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, openPage, requireEnv, startServer } from './harness.mjs';

let server, browser, page;
before(async () => {
  server = await startServer({
    pkg: requireEnv('TABSWARM_PKG', 'run `cargo xtask test`, which builds the wasm package'),
    data: requireEnv('TABSWARM_DATA', 'run `cargo xtask test`, which packs data/mnist.tsd'),
  });
  browser = await launchBrowser();
  ({ page } = await openPage(browser, server, '/tests/e2e/page.html'));
});
after(async () => { await browser?.close(); await server?.close(); });

for (const backend of ['flex', 'ndarray']) {
  test(`wasm ${backend}: loss is finite and falls, accuracy rises`, async () => {
    const r = await page.evaluate((backend) => {
      const { WasmTrainer } = window.tabswarm;
      const t = new WasmTrainer(window.dataset, 'mlp', backend, 'adam', 0.001, 64, 0n);
      const before = JSON.parse(t.evaluate());
      const losses = Array.from(t.steps(60));
      const after = JSON.parse(t.evaluate());
      return { losses, before, after, hash: t.param_hash() };
    }, backend);
    assert.equal(r.losses.length, 60);
    assert.ok(r.losses.every(Number.isFinite), `non-finite loss: ${r.losses}`);
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const first = mean(r.losses.slice(0, 10));
    const last = mean(r.losses.slice(-10));
    assert.ok(last < 0.6 * first, `loss did not fall: first 10 steps ${first}, last 10 ${last}`);
    assert.equal(r.before.examples, 1000);
    assert.ok(r.after.accuracy > r.before.accuracy + 0.3,
      `accuracy ${r.before.accuracy} -> ${r.after.accuracy}`);
    assert.match(r.hash, /^[0-9a-f]{64}$/);
  });
}

test('a corrupt dataset is refused with a clear error, not a crash', async () => {
  const msg = await page.evaluate(() => {
    const bad = window.dataset.slice(0, 1000);
    try { new window.tabswarm.WasmTrainer(bad, 'mlp', 'flex', 'adam', 0.001, 64, 0n); return 'accepted'; }
    catch (e) { return String(e.message); }
  });
  assert.match(msg, /truncated|header describes/);
});

test('the cnn trains in the browser too', async () => {
  const losses = await page.evaluate(() => {
    const t = new window.tabswarm.WasmTrainer(window.dataset, 'cnn', 'flex', 'adam', 0.003, 32, 1n);
    return Array.from(t.steps(40));
  });
  assert.ok(losses.every(Number.isFinite));
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(mean(losses.slice(-10)) < mean(losses.slice(0, 10)), `cnn loss did not fall: ${losses}`);
});

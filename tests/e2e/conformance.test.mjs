// Aggregation, delta application, hashing and model initialisation must give the same
// bits natively and in wasm, or peers would disagree on the model's hash.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { launchBrowser, openPage, requireEnv, startServer } from './harness.mjs';

let server, browser, page;
before(async () => {
  server = await startServer({
    pkg: requireEnv('TABSWARM_PKG', 'run `cargo xtask test`'),
    data: requireEnv('TABSWARM_DATA', 'run `cargo xtask test`'),
  });
  browser = await launchBrowser();
  ({ page } = await openPage(browser, server, '/tests/e2e/page.html'));
});
after(async () => { await browser?.close(); await server?.close(); });

test('native and wasm compute identical hashes', async () => {
  const seeds = [0, 1, 2, 12345];
  const bin = requireEnv('TABSWARM_CONFORMANCE_BIN', 'run `cargo xtask test`');
  const native = JSON.parse(execFileSync(bin, seeds.map(String), { encoding: 'utf8' }));
  const wasm = await page.evaluate((seeds) =>
    Object.fromEntries(seeds.map((s) => [String(s), JSON.parse(window.tabswarm.conformance(BigInt(s)))])), seeds);
  for (const s of seeds) {
    const names = Object.keys(native[s]);
    assert.ok(names.length >= 7, `too few conformance values: ${names}`);
    assert.deepEqual(wasm[s], native[s], `seed ${s} differs`);
  }
  // Different seeds must give different values, or the check would be vacuous.
  assert.notEqual(native['0'].weighted_mean, native['1'].weighted_mean);
});

test('the same seed gives the same trained parameters twice in wasm', async () => {
  const [a, b] = await page.evaluate(() => [0, 1].map(() => {
    const t = new window.tabswarm.WasmTrainer(window.dataset, 'mlp', 'flex', 'sgd', 0.05, 64, 7n);
    t.steps(5);
    return t.param_hash();
  }));
  assert.equal(a, b);
});

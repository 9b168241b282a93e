// Aggregation, delta application, hashing and model initialisation must give the same
// bits natively and in wasm, or peers would disagree on the model's hash: in both builds of
// the package (simd128, and relaxed SIMD, whose fused multiply-add may round differently in
// training but must never reach these).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { launchBrowser, openPage, requireEnv, startServer } from './harness.mjs';

// The relaxed-SIMD probe of www/kernels.js, refused as a browser without the feature would.
const WITHOUT_RELAXED_SIMD = () => {
  const validate = WebAssembly.validate;
  WebAssembly.validate = (bytes) => {
    const b = new Uint8Array(bytes.buffer ?? bytes);
    // 0xfd 0x80 0x02: i8x16.relaxed_swizzle, which only the probe uses.
    for (let i = 0; i + 2 < b.length; i++) if (b[i] === 0xfd && b[i + 1] === 0x80 && b[i + 2] === 0x02) return false;
    return validate(bytes);
  };
};

let server, browser;
const pages = {};
before(async () => {
  server = await startServer({
    pkg: requireEnv('TABSWARM_PKG', 'run `cargo xtask test`'),
    data: requireEnv('TABSWARM_DATA', 'run `cargo xtask test`'),
  });
  browser = await launchBrowser();
  for (const kernels of ['simd128', 'relaxed']) {
    ({ page: pages[kernels] } = await openPage(browser, server, `/tests/e2e/page.html?kernels=${kernels}`));
  }
});
after(async () => { await browser?.close(); await server?.close(); });

test('this Chromium runs the relaxed-SIMD build unless asked for simd128', async () => {
  assert.equal(await pages.relaxed.evaluate(() => window.kernels), 'relaxed');
  assert.equal(await pages.simd128.evaluate(() => window.kernels), 'simd128');
  const { page } = await openPage(browser, server, '/tests/e2e/page.html');
  assert.equal(await page.evaluate(() => window.kernels), 'relaxed', 'the default where the browser has relaxed SIMD');
  await page.close();
});

test('a browser without relaxed SIMD gets the simd128 build', async () => {
  const { page } = await openPage(browser, server, '/tests/e2e/page.html', { init: WITHOUT_RELAXED_SIMD });
  assert.equal(await page.evaluate(() => window.kernels), 'simd128');
  await page.close();
});

test('a relaxed build that fails to load falls back to simd128 and the page still trains', async () => {
  const context = await browser.newContext();
  await context.route('**/tabswarm_browser_relaxed_bg.wasm', (route) => route.fulfill({ status: 404, body: 'gone' }));
  const { page } = await openPage(context, server, '/tests/e2e/page.html');
  assert.equal(await page.evaluate(() => window.kernels), 'simd128');
  const losses = await page.evaluate(() => {
    const t = new window.tabswarm.WasmTrainer(window.dataset, 'mlp', 'flex', 'sgd', 0.05, 64, 3n);
    return Array.from(t.steps(3));
  });
  assert.ok(losses.every(Number.isFinite), `losses ${losses}`);
  await context.close();
});

for (const kernels of ['simd128', 'relaxed']) {
  test(`native and wasm (${kernels}) compute identical hashes`, async () => {
    const seeds = [0, 1, 2, 12345];
    const bin = requireEnv('TABSWARM_CONFORMANCE_BIN', 'run `cargo xtask test`');
    const native = JSON.parse(execFileSync(bin, seeds.map(String), { encoding: 'utf8' }));
    const wasm = await pages[kernels].evaluate((seeds) =>
      Object.fromEntries(seeds.map((s) => [String(s), JSON.parse(window.tabswarm.conformance(BigInt(s)))])), seeds);
    for (const s of seeds) {
      const names = Object.keys(native[s]);
      assert.ok(names.length >= 7, `too few conformance values: ${names}`);
      assert.deepEqual(wasm[s], native[s], `seed ${s} differs`);
    }
    // Different seeds must give different values, or the check would be vacuous.
    assert.notEqual(native['0'].weighted_mean, native['1'].weighted_mean);
  });

  test(`the same seed gives the same trained parameters twice in wasm (${kernels})`, async () => {
    const [a, b] = await pages[kernels].evaluate(() => [0, 1].map(() => {
      const t = new window.tabswarm.WasmTrainer(window.dataset, 'mlp', 'flex', 'sgd', 0.05, 64, 7n);
      t.steps(5);
      return t.param_hash();
    }));
    assert.equal(a, b);
  });
}

test('the two builds run different kernels: training diverges in the last bits, not more', async () => {
  const train = (page) => page.evaluate(() => {
    const t = new window.tabswarm.WasmTrainer(window.dataset, 'mlp', 'flex', 'sgd', 0.05, 64, 11n);
    const losses = Array.from(t.steps(20));
    return { losses, hash: t.param_hash() };
  });
  const [base, fused] = [await train(pages.simd128), await train(pages.relaxed)];
  // Fused multiply-add rounds once instead of twice: if the hashes matched, the relaxed build
  // would not be running the fused kernel at all.
  assert.notEqual(base.hash, fused.hash, 'the relaxed-SIMD build trained bit for bit like simd128');
  for (let i = 0; i < base.losses.length; i++) {
    assert.ok(Math.abs(base.losses[i] - fused.losses[i]) < 1e-3, `step ${i}: ${base.losses[i]} vs ${fused.losses[i]}`);
  }
});

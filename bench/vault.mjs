// Browser half of `cargo xtask bench --only data`: the data vault's figures in headless
// Chromium (tabswarm_core::perf::vault_rates, the code the native benchmark runs, in the
// simd128 build), several whole runs. Prints JSON on stdout: {runs: [...], user_agent}.
import { launchBrowser, openPage, requireEnv, startServer } from '../tests/e2e/harness.mjs';

const RUNS = Number(process.env.TABSWARM_BENCH_RUNS ?? 5);
// The native benchmark's shards: a demo training shard (~530 samples) and a large one.
const SHARDS = [531, 10_000];
const REPS = 9;

const server = await startServer({
  pkg: requireEnv('TABSWARM_PKG', 'run `cargo xtask bench --only data`'),
  data: requireEnv('TABSWARM_DATA', 'run `cargo xtask bench --only data`'),
});
const browser = await launchBrowser();
try {
  const { page } = await openPage(browser, server, '/bench/page.html');
  const result = await page.evaluate(({ RUNS, SHARDS, REPS }) => {
    const now = () => performance.now();
    const runs = [];
    for (let r = 0; r < RUNS; r++) {
      const run = {};
      for (const n of SHARDS) run[`shard_${n}_samples`] = JSON.parse(window.tabswarm.vault_rates(n, REPS, now));
      runs.push(run);
    }
    return { runs, user_agent: navigator.userAgent, cross_origin_isolated: crossOriginIsolated };
  }, { RUNS, SHARDS, REPS });
  process.stdout.write(JSON.stringify(result) + '\n');
} finally {
  await browser.close();
  await server.close();
}

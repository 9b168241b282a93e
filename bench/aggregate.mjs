// Browser half of `cargo xtask bench --only robust`: what each aggregation rule costs in
// headless Chromium (tabswarm_core::perf::aggregation_costs, the code the native benchmark
// runs, in the simd128 build), several whole runs. Prints JSON on stdout: {runs: [...], user_agent}.
import { launchBrowser, openPage, requireEnv, startServer } from '../tests/e2e/harness.mjs';

const RUNS = Number(process.env.TABSWARM_BENCH_RUNS ?? 5);
// The native benchmark's sizes: updates per aggregate, values per update (the MLP).
const UPDATES = [8, 64, 512];
const VALUES = 101_770;

const server = await startServer({
  pkg: requireEnv('TABSWARM_PKG', 'run `cargo xtask bench --only robust`'),
  data: requireEnv('TABSWARM_DATA', 'run `cargo xtask bench --only robust`'),
});
const browser = await launchBrowser();
try {
  const { page } = await openPage(browser, server, '/bench/page.html');
  const result = await page.evaluate(({ RUNS, UPDATES, VALUES }) => {
    const now = () => performance.now();
    const runs = [];
    for (let r = 0; r < RUNS; r++) {
      const run = {};
      for (const n of UPDATES) run[`updates_${n}`] = JSON.parse(window.tabswarm.aggregation_costs(n, VALUES, 1, now));
      runs.push(run);
    }
    return { runs, user_agent: navigator.userAgent };
  }, { RUNS, UPDATES, VALUES });
  process.stdout.write(JSON.stringify(result) + '\n');
} finally {
  await browser.close();
  await server.close();
}

// Browser half of `cargo xtask bench`: tabswarm's wasm training step (both backends, SGD and
// Adam; flex also in the relaxed-SIMD build, as `flex-relaxed`), burn's matmul at the step's
// shapes, the same MLP in TF.js 4.22 on its wasm backend (SIMD, one thread), and wasm SIMD
// peak kernels (bench/peak.mjs), all in one headless Chromium page, several whole runs.
// Prints JSON on stdout, one record per run.
import { launchBrowser, openPage, requireEnv, startServer } from '../tests/e2e/harness.mjs';

const STEPS = Number(process.env.TABSWARM_BENCH_STEPS ?? 300);
const RUNS = Number(process.env.TABSWARM_BENCH_RUNS ?? 5);
// One warm-up schedule for tabswarm's wasm steps and TF.js alike, so neither side is timed
// with more of V8's optimised code in place than the other.
const WARMUP = {
  prewarm_steps: 150, // every configuration once, before any is timed
  warmup_steps: 30, // untimed, on each fresh trainer or fresh TF.js variables, before timing
  timed_steps: STEPS,
  phase_steps: Math.min(STEPS, 200),
};
const server = await startServer({
  pkg: requireEnv('TABSWARM_PKG', 'run `cargo xtask bench`'),
  data: requireEnv('TABSWARM_DATA', 'run `cargo xtask bench`'),
});
const browser = await launchBrowser();
try {
  const { page } = await openPage(browser, server, '/bench/page.html');
  const result = await page.evaluate(async ({ RUNS, WARMUP }) => {
    // [name in the records, build, burn backend]; the relaxed build only where it loaded.
    const SETUPS = [['flex', window.tabswarm, 'flex'], ['ndarray', window.tabswarm, 'ndarray']];
    if (window.tabswarmRelaxed) SETUPS.push(['flex-relaxed', window.tabswarmRelaxed, 'flex']);
    const peak = await import('/bench/peak.mjs');
    const now = () => performance.now();
    const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
    const quantile = (xs, q) => { const s = [...xs].sort((a, b) => a - b); return s[Math.round((s.length - 1) * q)]; };
    const FLOPS = 2 * (2 * 64 * 784 * 128) + 3 * (2 * 64 * 128 * 10);
    const CONFIGS = [['sgd', 0.05], ['adam', 0.001]];
    const support = peak.support();
    const out = {
      runs: [], user_agent: navigator.userAgent, peak_kernels: peak.describe(),
      wasm_simd: support.simd128_mul_add, relaxed_simd: support.relaxed_madd,
    };

    // TF.js: same MLP, same batch, same real digits; upload each batch and await the loss,
    // so both sides measure finished work including input upload.
    const ds = window.dataset;
    const n = new DataView(ds.buffer).getUint32(8, true);
    const batches = [];
    for (let b = 0; b < 20; b++) {
      const xs = new Float32Array(64 * 784), ys = new Int32Array(64);
      for (let i = 0; i < 64; i++) {
        const idx = (b * 64 + i) % n;
        ys[i] = ds[16 + idx];
        for (let p = 0; p < 784; p++) xs[i * 784 + p] = (ds[16 + n + idx * 784 + p] / 255 - 0.1307) / 0.3081;
      }
      batches.push({ xs, ys });
    }
    out.tfjs_backend = tf.getBackend();
    out.tfjs_threads = tf.wasm.getThreadsCount();
    out.cross_origin_isolated = crossOriginIsolated;
    out.tfjs_version = tf.version.tfjs;
    const tfjsModel = (optimizer, lr) => {
      const bound1 = 1 / Math.sqrt(784), bound2 = 1 / Math.sqrt(128);
      const w1 = tf.variable(tf.randomUniform([784, 128], -bound1, bound1));
      const b1 = tf.variable(tf.zeros([128]));
      const w2 = tf.variable(tf.randomUniform([128, 10], -bound2, bound2));
      const b2 = tf.variable(tf.zeros([10]));
      const opt = optimizer === 'sgd' ? tf.train.sgd(lr) : tf.train.adam(lr);
      const step = async (i) => {
        const { xs, ys } = batches[i % batches.length];
        const loss = tf.tidy(() => {
          const x = tf.tensor2d(xs, [64, 784]);
          const y = tf.oneHot(tf.tensor1d(ys, 'int32'), 10);
          return opt.minimize(() => tf.losses.softmaxCrossEntropy(y, tf.relu(x.matMul(w1).add(b1)).matMul(w2).add(b2)), true);
        });
        const v = (await loss.data())[0];
        loss.dispose();
        return v;
      };
      const dispose = () => { [w1, b1, w2, b2].forEach((v) => v.dispose()); opt.dispose(); };
      return { step, dispose };
    };

    // V8 first runs wasm through its baseline compiler and swaps in optimised code for hot
    // functions in the background; warm every configuration up before timing any of them,
    // or whichever is measured first looks ~20% slower. TF.js gets the same.
    for (const [, build, backend] of SETUPS) {
      for (const [optimizer] of CONFIGS) {
        const w = new build.WasmTrainer(window.dataset, 'mlp', backend, optimizer, 0.01, 64, 1n);
        w.steps(WARMUP.prewarm_steps);
        w.free();
      }
    }
    for (const [optimizer, lr] of CONFIGS) {
      const m = tfjsModel(optimizer, lr);
      for (let i = 0; i < WARMUP.prewarm_steps; i++) await m.step(i);
      m.dispose();
    }
    const kernels = await peak.prepare();

    for (let run = 0; run < RUNS; run++) {
      const rec = { peak: peak.measure(kernels, now), steps: [], matmul: {}, tfjs: [] };
      for (const [name, build, backend] of SETUPS) {
        for (const [optimizer, lr] of CONFIGS) {
          const t = new build.WasmTrainer(window.dataset, 'mlp', backend, optimizer, lr, 64, 0n);
          t.steps(WARMUP.warmup_steps);
          const times = [];
          for (let i = 0; i < WARMUP.timed_steps; i++) { const t0 = now(); t.step(); times.push(now() - t0); }
          const phases = { input: [], forward: [], backward: [], optimizer: [] };
          for (let i = 0; i < WARMUP.phase_steps; i++) {
            const p = JSON.parse(t.step_phases(now));
            for (const k of Object.keys(phases)) phases[k].push(p[k]);
          }
          const med = median(times);
          rec.steps.push({
            backend: name, optimizer, model: 'mlp', batch: 64, timed_steps: WARMUP.timed_steps,
            median_ms: med, p10_ms: quantile(times, 0.1), p90_ms: quantile(times, 0.9),
            gflops: FLOPS / (med / 1e3) / 1e9,
            phases_median_ms: { input: median(phases.input), forward_and_loss: median(phases.forward), backward: median(phases.backward), optimizer: median(phases.optimizer) },
          });
          t.free();
        }
        const shapes = [[64, 784, 128], [64, 128, 10], [128, 64, 10], [64, 10, 128], [784, 64, 128]];
        let total = 0;
        const per = shapes.map(([m, k, n]) => {
          const g = build.matmul_gflops(backend, m, k, n, 200, now);
          const ms = (2 * m * k * n) / (g * 1e9) * 1e3;
          total += ms;
          return { shape: [m, k, n], median_ms: ms, gflops: g };
        });
        rec.matmul[name] = { step_matmuls: per, step_matmuls_ms: total, gflops_at_step_shapes: FLOPS / (total / 1e3) / 1e9 };
      }
      for (const [optimizer, lr] of CONFIGS) {
        const m = tfjsModel(optimizer, lr);
        for (let i = 0; i < WARMUP.warmup_steps; i++) await m.step(i);
        const times = [];
        let last = NaN;
        for (let i = 0; i < WARMUP.timed_steps; i++) { const t0 = now(); last = await m.step(i); times.push(now() - t0); }
        const med = median(times);
        rec.tfjs.push({ optimizer, median_ms: med, p10_ms: quantile(times, 0.1), p90_ms: quantile(times, 0.9), gflops: FLOPS / (med / 1e3) / 1e9, final_loss: last });
        m.dispose();
      }
      out.runs.push(rec);
    }
    return out;
  }, { RUNS, WARMUP });
  result.chromium_version = browser.version();
  result.warmup = WARMUP;
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
  await server.close();
}

// The volunteer's side of `cargo xtask bench --only browser`, against the relay and three
// validators it starts (TABSWARM_NETWORK, as in `cargo xtask test`). Per run, in a fresh
// browser profile:
//   1. a new volunteer: page open -> consent at once -> first update in a committed block
//      (the wasm package fetched and compiled on the way), then the tab's memory while it
//      trains;
//   2. the same volunteer comes back (wasm in the browser's cache, identity and chain in
//      IndexedDB) with two workers: page open -> its next update in a committed block, and
//      the training jobs the page timed on one worker and split across both (data
//      parallelism) before keeping the faster way;
//   3. ping round trips over each transport, forced with ?transport=.
// Prints JSON on stdout: the package's size and one record per run.
import { gzipSync } from 'node:zlib';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { launchBrowser, openPage, requireEnv, serveNetwork, until } from '../tests/e2e/harness.mjs';
import { median } from './peak.mjs';

const RUNS = Number(process.env.TABSWARM_BENCH_RUNS ?? 5);
const pkg = requireEnv('TABSWARM_PKG', 'run `cargo xtask bench --only browser`');
const PINGS = 10; // round trips per transport (one every 2 s)

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// What a volunteer's browser downloads of ours: the glue JS and one of the two wasm builds
// (with libp2p), relaxed SIMD where the browser has it, as this Chromium does.
function bundle() {
  const size = (files) => {
    const bytes = files.map((f) => readFileSync(join(pkg, f)));
    return {
      raw_mb: bytes.reduce((n, b) => n + b.length, 0) / 1e6,
      gzip_mb: bytes.reduce((n, b) => n + gzipSync(b, { level: 9 }).length, 0) / 1e6,
    };
  };
  const glue = readdirSync(pkg).filter((f) => f.endsWith('.js'));
  const simd128 = size([...glue, 'tabswarm_browser_bg.wasm']);
  const relaxed = size([...glue, 'tabswarm_browser_relaxed_bg.wasm']);
  return { ...relaxed, builds: { simd128, relaxed } };
}

// Opens the page, agrees at once, waits until the committed chain credits this tab with more
// than `credit` updates; seconds from opening.
async function volunteer(context, server, { workers, credit, query = '' }) {
  const t0 = performance.now();
  const { page } = await openPage(context, server, `/www/index.html${query}`);
  await page.selectOption('#workers', String(workers));
  await page.click('#join');
  // Where the time goes: the chain verified and running, the first update announced, then
  // the first one in a committed block.
  const marks = {};
  const end = Date.now() + 600_000;
  while (Date.now() < end) {
    const s = await page.evaluate(() => window.tabStatus ?? null);
    const at = (performance.now() - t0) / 1000;
    if (s?.state === 'running') marks.running_s ??= at;
    if (s?.updates_announced >= 1) marks.announced_s ??= at;
    if (s?.credit > credit) return { page, seconds: at, marks };
    await sleep(100);
  }
  throw new Error(`no update in a committed block in 600 s: ${JSON.stringify(marks)}`);
}

// Median times (ms) of the training jobs the page's pool timed each way when choosing
// between one worker and a job split across all of them (pool.js).
async function trainingJobs(page) {
  await until(page, 'training jobs timed each way', 300_000,
    () => window.tabswarmPool.timed.single.length >= 3 && window.tabswarmPool.timed.split.length >= 3);
  const { single, split } = await page.evaluate(() => window.tabswarmPool.timed);
  return { workers_1: median(single), workers_2: median(split) };
}

// The JS heaps of the page and its workers (the browser's own measurement, resolved at its
// next garbage collection) and, beside them, the wasm memories of the page and every
// worker, in MB.
async function memory(page) {
  return page.evaluate(async () => {
    const timeout = new Promise((_, fail) => setTimeout(() => fail(new Error('no measurement in 60 s')), 60_000));
    const m = await Promise.race([performance.measureUserAgentSpecificMemory(), timeout]);
    const parts = m.breakdown.filter((b) => b.bytes > 0).map((b) => ({
      mb: b.bytes / 1e6,
      types: b.types.join(','),
      scope: b.attribution.map((a) => a.scope).join(','),
    }));
    const wasm = window.tabswarmWasmBytes() + await window.tabswarmPool.wasmBytes();
    return { mb: m.bytes / 1e6, parts, wasm_mb: wasm / 1e6 };
  });
}

async function rtt(context, server, transport) {
  const { page } = await openPage(context, server, `/www/index.html?transport=${transport}`);
  await page.click('#join');
  const r = await until(page, `${PINGS} pings over ${transport}`, 180_000,
    ([t, n]) => (window.tabStatus?.rtt[t]?.samples >= n ? window.tabStatus.rtt[t] : null), [transport, PINGS]);
  await page.close();
  return { p50: r.p50_ms, p99: r.p99_ms };
}

const { server, network } = await serveNetwork();

async function ledgerCredit(address) {
  const r = await fetch(new URL(`/credits/${address}`, network.status[0]));
  if (!r.ok) throw new Error(`credits of ${address}: HTTP ${r.status}`);
  return (await r.json()).credit;
}
const browser = await launchBrowser();
const out = { bundle: bundle(), runs: [] };
try {
  for (let run = 0; run < RUNS; run++) {
    const context = await browser.newContext(); // a fresh profile: nothing cached
    // TABSWARM_TAB_QUERY (e.g. ?transport=websocket) narrows the first visit, to find where
    // its time goes.
    const query = process.env.TABSWARM_TAB_QUERY ?? '';
    const fresh = await volunteer(context, server, { workers: 1, credit: 0, query });
    const transport = await fresh.page.evaluate(() => window.tabStatus.transport);
    const heap = await memory(fresh.page);
    const address = await fresh.page.evaluate(() => window.tabStatus.address);
    await fresh.page.close();
    // What the chain credits once the closed page's last update is in a block or gone.
    await sleep(10_000);
    const credit = await ledgerCredit(address);
    // Two workers: the page times one worker and a split job and keeps the faster.
    const back = await volunteer(context, server, { workers: 2, credit });
    const jobs = await trainingJobs(back.page);
    await back.page.close();
    const record = {
      page_open_to_first_accepted_update_s: fresh.seconds,
      page_reopen_to_next_accepted_update_s: back.seconds,
      first_visit: { ...fresh.marks, transport },
      return_visit: back.marks,
      heap_mb: heap.mb,
      wasm_memory_mb: heap.wasm_mb,
      train_job_ms: jobs,
      workers: { speedup_2_over_1: jobs.workers_1 / jobs.workers_2 },
      rtt_ms: {
        websocket: await rtt(context, server, 'websocket'),
        webrtc: await rtt(context, server, 'webrtc-direct'),
      },
    };
    console.error(`run ${run + 1}/${RUNS}: ${JSON.stringify(record)}; memory by part: ${JSON.stringify(heap.parts)}`);
    out.runs.push(record);
    await context.close();
  }
  out.user_agent = await (async () => {
    const page = await browser.newPage();
    const ua = await page.evaluate(() => navigator.userAgent);
    await page.close();
    return ua;
  })();
} finally {
  await browser.close();
  await server.close();
}
console.log(JSON.stringify(out));

// Volunteers' tabs for the soak (native-node/tests/soak.rs starts this beside its native
// peers when TABSWARM_SOAK_TABS > 0; not a `node --test` file). Each tab is a fresh browser
// profile that opens the volunteer page, consents and trains on the network in
// TABSWARM_NETWORK for TABSWARM_SOAK_SECS. Every 10 s, per tab: its memory (the page's JS heap
// after a forced garbage collection, from the DevTools protocol, plus the wasm memories of the
// page and its workers) and its status. Prints one JSON object on stdout; the Rust test
// judges it. Exits non-zero only if the browser or the network could not be set up.
import { launchBrowser, openPage, pageErrors, serveNetwork } from './harness.mjs';

const TABS = Number(process.env.TABSWARM_SOAK_TABS ?? 2);
const SECS = Number(process.env.TABSWARM_SOAK_SECS ?? 90);
// The run's wall-clock end (the Rust test's): opening tabs on a loaded machine takes minutes.
const UNTIL = Number(process.env.TABSWARM_SOAK_UNTIL_MS ?? Date.now() + SECS * 1000);
const SAMPLE_MS = 10_000;
const SAMPLE_TIMEOUT_MS = 30_000;
const OPEN_TIMEOUT_MS = 180_000;
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

const { server } = await serveNetwork();
const browser = await launchBrowser();
const tabs = [];
for (let i = 0; i < TABS; i += 1) {
  const context = await browser.newContext();
  let tab = { page: null, errors: [], consoleLines: [] };
  try {
    // On a machine running 32 busy nodes the page's wasm took minutes to load, and its join
    // button as long to show: far past playwright's 30 s default.
    tab = await openPage(context, server, '/www/index.html', { loadMs: OPEN_TIMEOUT_MS });
    tab.crashed = false;
    tab.page.on('crash', () => { tab.crashed = true; });
    await tab.page.click('#join', { timeout: OPEN_TIMEOUT_MS });
    tab.cdp = await context.newCDPSession(tab.page);
    await tab.cdp.send('Performance.enable');
  } catch (e) {
    // Reported with the tab (the test judges it), not thrown: the other tabs' figures stand.
    tab.errors.push(`opening failed: ${e.message}`);
    tab.failed = true;
  }
  tab.crashed ??= false;
  tab.samples = [];
  tabs.push(tab);
}

async function sample(tab, at) {
  await tab.cdp.send('HeapProfiler.collectGarbage');
  const { metrics } = await tab.cdp.send('Performance.getMetrics');
  const heap = metrics.find((m) => m.name === 'JSHeapUsedSize')?.value ?? 0;
  const s = await tab.page.evaluate(async () => ({
    status: window.tabStatus ?? null,
    wasm: (window.tabswarmWasmBytes?.() ?? 0) + ((await window.tabswarmPool?.wasmBytes?.()) ?? 0),
  }));
  tab.samples.push({
    s: at,
    heap_mb: heap / 1e6,
    wasm_mb: s.wasm / 1e6,
    state: s.status?.state ?? null,
    height: s.status?.height ?? 0,
    params_height: s.status?.params_height ?? 0,
    credit: s.status?.credit ?? 0,
    peers: s.status?.peers ?? 0,
  });
}

const started = Date.now();
while (Date.now() < UNTIL) {
  await sleep(SAMPLE_MS);
  const at = (Date.now() - started) / 1000;
  for (const tab of tabs) {
    if (tab.crashed || tab.failed) continue;
    try {
      // A tab on an overloaded machine may not answer for minutes: give up on that reading.
      await Promise.race([
        sample(tab, at),
        sleep(SAMPLE_TIMEOUT_MS).then(() => { throw new Error('no answer in 30 s'); }),
      ]);
    } catch (e) {
      tab.errors.push(`sampling failed: ${e.message}`);
    }
  }
}

const report = {
  tabs: tabs.map((t) => ({
    crashed: t.crashed,
    errors: pageErrors(t.errors),
    samples: t.samples,
    // What the tab said last (its tracing goes to the console): read when it fails.
    console_tail: t.consoleLines.slice(-60),
  })),
};
process.stdout.write(`${JSON.stringify(report)}\n`);
// The report is out: closing an overloaded browser must not keep the test waiting.
await Promise.race([Promise.all([browser.close(), server.close()]), sleep(20_000)]);
process.exit(0);

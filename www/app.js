// The volunteer page: nothing runs before the volunteer agrees; then the tab joins the run
// as a peer (network on this thread, jobs in Web Workers) and shows what it does.
import init, { Tab, average_gradients } from '/pkg/tabswarm_browser.js';
import uPlot from '/node_modules/uplot/dist/uPlot.esm.js';
import { loadSecret } from './identity.js';
import { WorkerPool } from './pool.js';
import { setupTry } from './try.js';
import { loadCache, saveCache } from './store.js';
import { chooseKernels, loadWasm, simd128Supported } from './kernels.js';

// The volunteer page (index.html) and the widget's card (card.html) share this script; the
// card shows fewer fields, so every field is optional.
const $ = (id) => document.getElementById(id);
const set = (id, text) => { const el = $(id); if (el) el.textContent = text; };
const checked = (id) => $(id)?.checked ?? true;
const cores = navigator.hardwareConcurrency || 2;
const params = new URLSearchParams(location.search);

// Where the run is: the page's server says (`cargo xtask demo` writes /network.json), and
// ?bootstrap=<multiaddr> (repeatable) and ?genesis=<url> point it elsewhere.
async function networkConfig() {
  const q = new URLSearchParams(location.search);
  let cfg = {};
  try {
    const r = await fetch('/network.json', { cache: 'no-store' });
    if (r.ok) cfg = await r.json();
  } catch { /* no local network: the query must say */ }
  if (q.getAll('bootstrap').length) cfg.bootstrap = q.getAll('bootstrap');
  if (q.get('genesis')) {
    const r = await fetch(q.get('genesis'));
    if (!r.ok) throw new Error(`genesis ${q.get('genesis')}: HTTP ${r.status}`);
    cfg.genesis = await r.text();
  }
  // ?transport=webrtc-direct or websocket: only that transport (to compare them).
  const only = q.get('transport');
  if (only && cfg.bootstrap) {
    const keep = { 'webrtc-direct': (a) => a.includes('/webrtc-direct/'), websocket: (a) => /\/wss?\//.test(a) }[only];
    if (!keep) throw new Error(`?transport=${only}: use webrtc-direct or websocket`);
    cfg.bootstrap = cfg.bootstrap.filter(keep);
  }
  if (!cfg.genesis || !cfg.bootstrap?.length) {
    throw new Error('No network to join: open this page from `cargo xtask demo`, or add ?bootstrap=<multiaddr>&genesis=<url>.');
  }
  cfg.dataset ??= '/data/mnist.tsd';
  return cfg;
}

function showProblem(text) {
  $('problem').textContent = text ?? '';
  $('problem').hidden = !text;
}

// Why the tab is paused: the volunteer's button, a hidden page, a laptop on battery. Each
// reason is kept apart, so showing the page again does not resume a laptop on battery.
const state = { tab: null, pool: null, chart: null, userPaused: false, hidden: false, onBattery: false };

function applyPause() {
  if (!state.tab) return;
  const paused = state.userPaused
    || (checked('pause-hidden') && state.hidden)
    || (checked('pause-battery') && state.onBattery);
  if (paused) state.tab.pause(); else state.tab.resume();
  $('pause').textContent = state.userPaused ? 'Resume' : 'Pause';
}

function watchPower() {
  state.hidden = document.hidden;
  document.addEventListener('visibilitychange', () => {
    state.hidden = document.hidden;
    applyPause();
  });
  navigator.getBattery?.().then((b) => {
    const check = () => {
      state.onBattery = !b.charging;
      applyPause();
    };
    b.addEventListener('chargingchange', check);
    check();
  }).catch(() => {});
}

function makeChart() {
  const opts = {
    width: Math.min(640, $('chart').clientWidth || 320), height: 220,
    scales: { x: { time: false }, acc: { range: [0, 1] } },
    series: [
      { label: 'height' },
      { label: 'accuracy', scale: 'acc', stroke: '#1a7f37', value: (u, v) => v == null ? '-' : `${(v * 100).toFixed(1)}%` },
      { label: 'loss', stroke: '#cf222e' },
    ],
    axes: [{}, { scale: 'acc' }, { side: 1, grid: { show: false } }],
  };
  return new uPlot(opts, [[], [], []], $('chart'));
}

function render(s) {
  window.tabStatus = s; // for tests and the curious
  set('state', s.state.replace('_', ' '));
  set('transport', s.transport ?? '-');
  const tabs = s.circuit_peers.length ? `, ${s.circuit_peers.length} reached through it` : '';
  set('peers', `${s.peers} (${s.relays} relay${s.relays === 1 ? '' : 's'}${tabs})`);
  set('height', s.height);
  set('model', s.param_hash.slice(0, 16));
  set('credit', s.credit);
  set('samples', s.samples.toLocaleString());
  set('announced', s.updates_announced);
  const lt = state.pool.lastTrain;
  set('train-ms', s.last_train_ms ? `${(s.last_train_ms / 1000).toFixed(1)} s${lt ? ` on ${lt.workers} workers` : ''}` : '-');
  set('jobs', `${s.jobs_running} of ${state.pool.workers.length}`);
  set('address', s.address);
  set('rtt', Object.entries(s.rtt).map(([t, r]) => `${t} ${r.p50_ms.toFixed(0)} ms (p90 ${r.p90_ms.toFixed(0)} ms)`).join(', ') || '-');
  set('data', dataText(s.data));
  const last = s.history.at(-1);
  set('accuracy', last ? `${(last.accuracy * 100).toFixed(1)}% at height ${last.height}` : '-');
  const planError = state.pool.planError && `the workers could not take the run's data: ${state.pool.planError}`;
  showProblem(s.problem ?? planError);
  if (state.chart && s.history.length) {
    state.chart.setData([s.history.map((p) => p.height), s.history.map((p) => p.accuracy), s.history.map((p) => p.loss)]);
  }
}

// The run's data on the network, in a line.
function dataText(d) {
  if (!d) return 'brought by this page';
  if (!d.epoch) return 'looking for the run\'s manifest';
  const from = d.restored ? ` (${d.restored} kept from an earlier visit)` : '';
  const phase = d.ready ? 'ready' : d.has_key ? 'fetching' : 'waiting for a grant';
  return `${phase}: ${d.held} of ${d.shards} shards held${from}, epoch ${d.epoch}`;
}

async function join() {
  $('join').disabled = true;
  $('consent').hidden = true;
  $('running').hidden = false;
  try {
    const cfg = await networkConfig();
    // ?kernels=simd128 runs the baseline build where relaxed SIMD would be chosen.
    const { wasm, kernels } = await loadWasm(init, chooseKernels(params.get('kernels') ?? undefined));
    set('kernels', kernels === 'relaxed' ? 'WebAssembly relaxed SIMD (fused multiply-add)' : 'WebAssembly SIMD');
    window.tabswarmWasmBytes = () => wasm.memory.buffer.byteLength; // benchmarks
    const size = Number($('workers').value);
    // ?split=always|never overrides the pool's own choice (see pool.js).
    const split = ['always', 'never'].includes(params.get('split')) ? params.get('split') : 'auto';
    // A run that keeps its data on the network: the workers get what the tab's peer fetches.
    const dataset = JSON.parse(cfg.genesis).data ? null : cfg.dataset;
    state.pool = new WorkerPool({ size, dataset, genesis: cfg.genesis, kernels, average: average_gradients, split });
    window.tabswarmPool = state.pool;
    set('state', dataset ? 'loading the model code and data in workers' : 'loading the model code in workers');
    await state.pool.ready;
    const { secret, slot, persistent } = await loadSecret();
    // Each identity keeps its own data: tabs of one browser read different training shards,
    // and a shared record would hand a reopened tab whichever tab saved last.
    const dataKey = slot === 0 ? 'data' : `data-${slot}`;
    if (!persistent) showProblem('This browser does not keep site data here: credit starts over on reload.');
    const log = params.get('log') ?? undefined;
    state.tab = Tab.start(JSON.stringify({ genesis: cfg.genesis, bootstrap: cfg.bootstrap, log }), secret,
      (job, kind) => state.pool.run(job, kind), (plan) => state.pool.setPlan(plan),
      await loadCache('chain'), await loadCache(dataKey));
    // The verified chain is kept so the next load resumes from it instead of from genesis:
    // every 5 s until a first copy is stored (a volunteer may close the tab within the first
    // minute, and a write begun as the page closes may never finish), then every 30 s (the
    // whole chain is written each time), and when the page is hidden or closed. The run's
    // data the tab fetched is kept too, only when it changed (a first fetch, a new epoch).
    let stored = false;
    const keep = () => {
      const bytes = state.tab.take_cache();
      if (bytes) saveCache(bytes, 'chain').then(() => { stored = true; });
      const data = state.tab.take_data();
      if (data) saveCache(data, dataKey);
    };
    const early = setInterval(() => { if (stored) clearInterval(early); else keep(); }, 5_000);
    setInterval(keep, 30_000);
    addEventListener('pagehide', keep);
    document.addEventListener('visibilitychange', () => { if (document.hidden) keep(); });
    if ($('chart')) state.chart = makeChart();
    state.pool.duty = Number($('throttle')?.value ?? 100) / 100;
    watchPower();
    applyPause();
    setInterval(() => render(JSON.parse(state.tab.status())), 500);
    if ($('try')) {
      $('try').hidden = false;
      setupTry({ root: document, tab: state.tab, genesis: cfg.genesis, kernels, onProblem: showProblem });
    }
    window.tabswarmTab = state.tab;
  } catch (e) {
    showProblem(String(e?.message ?? e));
    window.loadError = String(e?.message ?? e);
  }
}

function setup() {
  if (!simd128Supported()) {
    showProblem('This browser cannot run WebAssembly SIMD, which the trainer needs. A current Chrome, Edge, Firefox or Safari can.');
    $('join').disabled = true;
    window.ready = true; // ready to say why it cannot run
    return;
  }
  const w = $('workers');
  for (let n = 1; n <= cores; n++) w.add(new Option(`${n}`, n));
  w.value = String(Math.max(1, Math.floor(cores / 2)));
  $('join').addEventListener('click', join);
  $('pause').addEventListener('click', () => { state.userPaused = !state.userPaused; applyPause(); });
  for (const id of ['pause-hidden', 'pause-battery']) $(id)?.addEventListener('change', applyPause);
  $('throttle')?.addEventListener('input', () => {
    $('throttle-value').textContent = `${$('throttle').value}%`;
    if (state.pool) state.pool.duty = Number($('throttle').value) / 100;
  });
  window.ready = true;
}

setup();

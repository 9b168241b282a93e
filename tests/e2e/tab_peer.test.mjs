// Volunteers' tabs join a running network of native nodes (a relay and validators that
// `cargo xtask test` starts and describes in TABSWARM_NETWORK). Two tabs of one browser, as a
// volunteer would open them: nothing computes before consent; then each catches up (blocks
// verified from genesis, a hash-checked checkpoint), listens through the relay, trains in a
// Web Worker and gets its updates into committed blocks (read from a node's ledger, not
// from the page), holds the very parameters a node holds, reaches the other tab through a
// relay circuit, pauses (no job runs) and resumes. The run keeps its data on the network (an
// open run: the dataset key is in the genesis): tabs train and test on shards they fetched
// from the nodes, never on a copy the page serves. Closing a tab mid-round does not stop the
// network; reopened, it has its old identity and credit, and its shards from IndexedDB
// instead of downloading them again. No page error on the way.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { launchBrowser, openPage, pageErrors, screenshot, serveNetwork } from './harness.mjs';

let server, browser, context, network;
const tabs = {}; // name -> { page, errors, consoleLines }

before(async () => {
  ({ server, network } = await serveNetwork());
  browser = await launchBrowser();
  context = await browser.newContext(); // one profile: the tabs share IndexedDB and locks
});
after(async () => { await browser?.close(); await server?.close(); });

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function nodeStatus() {
  return (await fetch(network.status[0])).json();
}

// A trainer's credit in a validator's committed ledger.
async function ledgerCredit(address) {
  const url = new URL(`/credits/${address}`, network.status[0]);
  const r = await fetch(url);
  const body = await r.text();
  assert.equal(r.status, 200, `${url}: ${body}`);
  return JSON.parse(body).credit;
}

const status = (name) => tabs[name].page.evaluate(() => window.tabStatus ?? null);

// Polls `fn` in tab `name` every 250 ms until it returns a truthy value or `ms` pass.
async function waitIn(name, what, ms, fn, arg) {
  const { page, consoleLines } = tabs[name];
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    last = await page.evaluate(() => window.tabStatus ?? null);
    const v = await page.evaluate(fn, arg);
    if (v) return v;
    await sleep(250);
  }
  throw new Error(`timed out after ${ms / 1000} s waiting for ${what} in tab ${name}; status: `
    + `${JSON.stringify(last)}\npage console (last lines):\n${consoleLines.slice(-80).join('\n')}`);
}

function assertNoErrors() {
  for (const [name, { errors }] of Object.entries(tabs)) {
    assert.deepEqual(pageErrors(errors), [], `page errors in tab ${name}`);
  }
}

// Counts Web Workers the page makes, from before its first script runs.
function countWorkers() {
  window.workersMade = 0;
  const Native = window.Worker;
  window.Worker = class extends Native {
    constructor(...args) { super(...args); window.workersMade += 1; }
  };
}

// Headless Chromium has no battery to unplug: the page gets a battery the test controls
// (charging until told otherwise), with the Battery Status API's shape.
function fakeBattery() {
  const battery = new EventTarget();
  battery.charging = true;
  battery.set = (charging) => {
    battery.charging = charging;
    battery.dispatchEvent(new Event('chargingchange'));
  };
  window.fakeBattery = battery;
  navigator.getBattery = () => Promise.resolve(battery);
}

async function open(name, query = '') {
  tabs[name] = await openPage(context, server, `/www/index.html${query}`, {
    init: `(${countWorkers})(); (${fakeBattery})();`,
  });
}

async function join(name, { workers } = {}) {
  if (workers) await tabs[name].page.selectOption('#workers', String(workers));
  await tabs[name].page.click('#join');
  await waitIn(name, 'a connection', 60_000, () => window.tabStatus?.peers >= 1);
}

test('nothing computes before the volunteer agrees', async () => {
  await open('a');
  await sleep(1_000);
  const before = await tabs.a.page.evaluate(() => ({
    workers: window.workersMade,
    wasm: performance.getEntriesByType('resource').filter((e) => e.name.endsWith('.wasm')).length,
    tab: window.tabStatus ?? null,
  }));
  assert.deepEqual(before, { workers: 0, wasm: 0, tab: null }, 'work started before consent');
  await join('a');
  assert.ok(await tabs.a.page.evaluate(() => window.workersMade) >= 1, 'no worker after consent');
});

test('two tabs of one browser are two peers that train into committed blocks and agree with the nodes', async () => {
  // Tab b splits every training job across two workers (gradients averaged on the page),
  // even where one worker alone is faster (the page's own choice, see pool.js).
  await open('b', '?split=always');
  await join('b', { workers: 2 });
  const [a, b] = [await status('a'), await status('b')];
  assert.notEqual(a.address, b.address, 'two open tabs share one identity');
  assert.notEqual(a.peer_id, b.peer_id);
  for (const name of ['a', 'b']) {
    const s = await status(name);
    assert.ok(['websocket', 'webrtc-direct', 'relay'].includes(s.transport), `transport ${s.transport}`);
    await waitIn(name, 'catch-up', 120_000, () => window.tabStatus.state === 'running');
    // Websocket where it connects; webrtc-direct (its stalls cost tabs their deadlines) only
    // where it does not.
    await waitIn(name, 'round trips over websocket', 30_000, () => window.tabStatus.rtt.websocket?.samples >= 1);
    assert.equal((await status(name)).rtt['webrtc-direct'], undefined, `tab ${name} dialled webrtc-direct where websocket works`);
    await waitIn(name, 'a relay circuit', 60_000, () => window.tabStatus.reachable_via_relay);
  }
  // Tab b splits every training job across both its workers: its credit below is for such
  // updates.
  await waitIn('b', 'a training job split across two workers', 60_000, () => window.tabswarmPool.lastTrain?.workers === 2);
  for (const name of ['a', 'b']) {
    // A tab trains slower than the native validators; proposers wait for it (up to the run's
    // 2 s deadline) once its first late job tells them it is training (17 s for the 2-worker
    // tab in one run; before that, no update in 6 minutes). The wait is long for a busy
    // 2-core machine.
    const waited = Date.now();
    await waitIn(name, 'an update in a committed block', 360_000, () => window.tabStatus.credit >= 1);
    const train = await tabs[name].page.evaluate(() => window.tabswarmPool.lastTrain);
    const job = train ? ` (a training job took ${Math.round(train.elapsedMs)} ms on ${train.workers} workers)` : '';
    console.log(`tab ${name}: first update in a committed block after ${(Date.now() - waited) / 1000} s${job}`);
    const { address } = await status(name);
    // What the tab shows is what the network recorded.
    let credit = 0;
    for (let i = 0; i < 40 && credit < 1; i++, await sleep(250)) credit = await ledgerCredit(address);
    assert.ok(credit >= 1, `the validator's ledger credits tab ${name} with ${credit} updates`);
  }

  // The data they trained on came from the network: shards fetched from peers and checked
  // against the owner-signed manifest; the page's server never handed out a dataset.
  for (const name of ['a', 'b']) {
    const { data } = await status(name);
    assert.ok(data?.ready, `tab ${name} trains without the run's data? ${JSON.stringify(data)}`);
    // Validation, test and (at most) two training shards.
    assert.ok(data.fetched >= 3 && data.held <= data.shards, `tab ${name}: ${JSON.stringify(data)}`);
    assert.equal(data.has_key, true);
  }
  assert.equal(server.hits.get('/data/mnist.tsd') ?? 0, 0, 'a page fetched the dataset from its server');

  // Same height, same parameters as a native validator.
  for (const name of ['a', 'b']) {
    let compared = 0;
    for (let i = 0; i < 300 && compared < 3; i++) {
      const [tab, node] = await Promise.all([status(name), nodeStatus()]);
      // Parameters held for the height committed (not a moment where a block committed
      // before its updates arrived).
      if (tab.height === node.height && tab.params_height === tab.height && tab.height > 0) {
        assert.equal(tab.param_hash, node.param_hash, `tab ${name}: parameters differ at height ${tab.height}`);
        compared++;
      }
      await sleep(50);
    }
    assert.ok(compared >= 1, `never caught tab ${name} and the node at the same height`);
  }

  // The chart: committed parameters tested in the workers, from the initial model (height 0,
  // tested as the tab starts) to now, with the loss falling.
  const t = await status('a');
  assert.ok(t.history.length >= 2, 'no test figures');
  assert.equal(t.history[0].height, 0, 'the chart does not start at the initial model');
  assert.ok(t.history.at(-1).loss < t.history[0].loss - 0.5,
    `loss did not fall: ${t.history[0].loss} at height 0, ${t.history.at(-1).loss} at ${t.history.at(-1).height}`);
  assert.ok(t.history.at(-1).accuracy > 0.5, `accuracy ${t.history.at(-1).accuracy}`);
  assert.ok(await tabs.a.page.evaluate(() => document.querySelectorAll('#chart canvas').length >= 1), 'no chart drawn');
  assertNoErrors();
});

test('the volunteer draws a digit and the committed model reads it; the model downloads as SafeTensors', async () => {
  const { page } = tabs.a;
  await page.locator('#try').scrollIntoViewIfNeeded();
  const pad = await page.locator('#pad').boundingBox();
  // A "1": one stroke down the middle of the pad.
  await page.mouse.move(pad.x + pad.width * 0.5, pad.y + pad.height * 0.15);
  await page.mouse.down();
  for (let i = 1; i <= 10; i++) await page.mouse.move(pad.x + pad.width * 0.52, pad.y + pad.height * (0.15 + 0.07 * i));
  await page.mouse.up();
  const guess = await waitIn('a', 'a guess', 60_000, () => window.lastGuess);
  assert.ok(Math.abs(guess.probs.reduce((x, y) => x + y, 0) - 1) < 1e-3, `probabilities ${guess.probs}`);
  assert.equal(guess.digit, 1, `the model read a ${guess.digit}: ${guess.probs.map((p) => p.toFixed(2))}`);
  assert.match(await page.locator('#guess').textContent(), /reads a 1/);
  // What a volunteer sees: status, chart, contribution, the drawn digit read.
  await screenshot(page, 'volunteer-page');

  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  const name = download.suggestedFilename();
  const m = name.match(/^tabswarm-mnist-height-(\d+)-([0-9a-f]{8})\.safetensors$/);
  assert.ok(m, `file name ${name}`);
  const file = readFileSync(await download.path());
  const headerLen = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLen).toString('utf8'));
  const meta = header.__metadata__;
  assert.ok(meta['tabswarm.param_hash'].startsWith(m[2]), `exported ${meta['tabswarm.param_hash']}, held ${m[2]}`);
  const tensors = Object.entries(header).filter(([k]) => k !== '__metadata__');
  assert.ok(tensors.length >= 2, 'no tensors in the file');
  const values = tensors.reduce((n, [, t]) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  assert.equal(file.length, 8 + headerLen + values * 4, 'tensor bytes do not match their shapes');
  assertNoErrors();
});

test('tabs reach each other through a relay circuit and exchange messages over it', async () => {
  const [a, b] = [await status('a'), await status('b')];
  await waitIn('a', 'a circuit to tab b', 90_000, (id) => window.tabStatus.circuit_peers.includes(id), b.peer_id);
  await waitIn('b', 'a circuit to tab a', 30_000, (id) => window.tabStatus.circuit_peers.includes(id), a.peer_id);
  for (const name of ['a', 'b']) {
    await waitIn(name, 'messages over the circuit', 60_000, () => window.tabStatus.circuit_messages > 0);
  }
  assertNoErrors();
});

test('a paused tab runs no job and announces nothing, then resumes', async () => {
  await tabs.a.page.click('#pause');
  await waitIn('a', 'paused', 10_000, () => window.tabStatus.state === 'paused');
  await waitIn('a', 'running jobs to finish', 60_000, () => window.tabStatus.jobs_running === 0);
  const before = await status('a');
  await waitIn('a', 'three more heights while paused', 60_000, (h) => window.tabStatus.height >= h + 3, before.height);
  const after = await status('a');
  assert.equal(after.updates_announced, before.updates_announced, 'announced while paused');
  assert.equal(after.history.length, before.history.length, 'tested new heights while paused');
  await tabs.a.page.click('#pause');
  await waitIn('a', 'training again', 60_000, (n) => window.tabStatus.updates_announced > n, before.updates_announced);
  assertNoErrors();
});

test('a hidden tab pauses by itself and goes on when shown again', async () => {
  // What the browser does when the volunteer switches tabs: hidden, then a visibilitychange.
  const setHidden = (hidden) => {
    Object.defineProperty(document, 'hidden', { value: hidden, configurable: true });
    Object.defineProperty(document, 'visibilityState', { value: hidden ? 'hidden' : 'visible', configurable: true });
    document.dispatchEvent(new Event('visibilitychange'));
  };
  await tabs.a.page.evaluate(setHidden, true);
  await waitIn('a', 'paused while hidden', 10_000, () => window.tabStatus.state === 'paused');
  await tabs.a.page.evaluate(setHidden, false);
  await waitIn('a', 'running when shown', 10_000, () => window.tabStatus.state === 'running');

  // On battery, hidden, shown again: still on battery, so still paused.
  await tabs.a.page.evaluate(() => window.fakeBattery.set(false));
  await waitIn('a', 'paused on battery', 10_000, () => window.tabStatus.state === 'paused');
  await tabs.a.page.evaluate(setHidden, true);
  await tabs.a.page.evaluate(setHidden, false);
  await sleep(1_000);
  assert.equal((await status('a')).state, 'paused', 'showing the page resumed a laptop on battery');
  await tabs.a.page.evaluate(() => window.fakeBattery.set(true));
  await waitIn('a', 'running when plugged in', 10_000, () => window.tabStatus.state === 'running');
  assertNoErrors();
});

test('closing a tab mid-round does not stop the network; reopened, it keeps its identity and credit', async () => {
  await waitIn('a', 'a job in flight', 60_000, () => window.tabStatus.jobs_running >= 1);
  const { address, peer_id } = await status('a');
  const credit = await ledgerCredit(address);
  const height = (await nodeStatus()).height;
  assertNoErrors();
  await tabs.a.page.close();
  delete tabs.a;
  for (let i = 0; i < 240 && (await nodeStatus()).height < height + 3; i++) await sleep(250);
  assert.ok((await nodeStatus()).height >= height + 3, 'the network stopped committing when a tab left');

  await open('a');
  const t0 = Date.now();
  await join('a');
  const s = await status('a');
  assert.equal(s.address, address, 'a reopened tab got a new identity');
  assert.equal(s.peer_id, peer_id);
  // It resumed from the chain an earlier load kept (verified again), not from genesis.
  assert.ok(s.restored_height > 0, 'the reopened tab did not resume from its cached chain');
  await waitIn('a', 'running again', 60_000, () => window.tabStatus.state === 'running');
  console.log(`# reopened tab: resumed from height ${s.restored_height}, running after ${(Date.now() - t0) / 1000} s`);
  // Its shards came back from IndexedDB (checked again by the peer), not over the network.
  const { data } = await waitIn('a', 'its data ready', 60_000, () => window.tabStatus.data?.ready && window.tabStatus);
  assert.ok(data.restored >= 3, `the reopened tab did not keep its shards: ${JSON.stringify(data)}`);
  assert.equal(data.fetched, 0, `the reopened tab downloaded shards it kept: ${JSON.stringify(data)}`);
  await waitIn('a', 'the old credit back', 120_000, (c) => window.tabStatus.state === 'running' && window.tabStatus.credit >= c, credit);
  assertNoErrors();
});

test('with two workers the page times split and single-worker training and keeps the faster', async () => {
  await open('c');
  await join('c', { workers: 2 });
  // Three jobs each way, then the faster way (the other again only every 40 jobs).
  await waitIn('c', 'six training jobs timed', 180_000, () => window.tabswarmPool.trained >= 7);
  // Read between jobs: the newest job ran the way the pool chose for it.
  await waitIn('c', 'no job running', 30_000, () => window.tabswarmPool.busy === 0);
  const pool = await tabs.c.page.evaluate(() => {
    const p = window.tabswarmPool;
    return { split: p.timed.split, single: p.timed.single, choice: p.choice, last: p.lastTrain.workers };
  });
  assert.ok(pool.split.length >= 3, `split jobs timed: ${pool.split}`);
  assert.ok(pool.single.length >= 3, `single-worker jobs timed: ${pool.single}`);
  const { medians } = pool.choice;
  const faster = medians.split < medians.single;
  assert.equal(pool.choice.split, pool.choice.reprobe ? !faster : faster, `chose the slower way: ${JSON.stringify(pool)}`);
  assert.equal(pool.last, pool.choice.split ? 2 : 1, `ran another way than chosen: ${JSON.stringify(pool)}`);
  console.log(`# two workers: split jobs ${pool.split.map(Math.round)} ms, one worker ${pool.single.map(Math.round)} ms`);
  assertNoErrors();
});

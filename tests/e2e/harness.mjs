// Shared by the browser tests and benchmarks: a static server on 127.0.0.1 and Debian's
// chromium driven by playwright-core (no browser download, no network).
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

export function requireEnv(name, hint) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: ${hint}`);
  return v;
}

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.json': 'application/json', '.tsd': 'application/octet-stream',
  '.css': 'text/css',
};

// Serves only what the pages need: the generated package, the dataset, the volunteer page
// (www/), the test pages, node_modules (uPlot, TF.js for the side-by-side benchmark) and,
// when given, the network a tab should join as /network.json. Paths cannot escape their roots.
export async function startServer({ pkg, data, network, port = 0 }) {
  const mounts = [
    ['/pkg/', pkg],
    ['/www/', join(ROOT, 'www')],
    ['/tests/e2e/', join(ROOT, 'tests/e2e')],
    ['/bench/', join(ROOT, 'bench')],
    ['/node_modules/', join(ROOT, 'node_modules')],
  ];
  const hits = new Map(); // requests by path, for tests that check what a page fetched
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://x');
      hits.set(url.pathname, (hits.get(url.pathname) ?? 0) + 1);
      if (url.pathname === '/') {
        res.writeHead(302, { location: `/www/index.html${url.search}` }).end();
        return;
      }
      let file = null;
      if (url.pathname === '/data/mnist.tsd') file = data;
      if (url.pathname === '/network.json' && network) file = network;
      for (const [prefix, dir] of mounts) {
        if (!file && url.pathname.startsWith(prefix)) {
          const rel = normalize(decodeURIComponent(url.pathname.slice(prefix.length)));
          if (rel.startsWith('..')) throw new Error('outside root');
          file = join(dir, rel);
        }
      }
      if (!file || !(await stat(file)).isFile()) throw new Error('not found');
      res.writeHead(200, {
        'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
        // Cross-origin isolation: performance.now() then ticks in 5 us instead of 100 us,
        // which the benchmarks need to time single steps.
        'cross-origin-opener-policy': 'same-origin',
        'cross-origin-embedder-policy': 'require-corp',
      });
      res.end(await readFile(file));
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise((ok, fail) => server.once('error', fail).listen(port, '127.0.0.1', ok));
  const bound = server.address().port;
  return { url: `http://127.0.0.1:${bound}`, hits, close: () => new Promise((ok) => server.close(ok)) };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.TABSWARM_CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run',
    ],
  });
}

// Opens `path` in `where` (a browser: a fresh profile; a context: pages sharing its storage,
// like tabs of one browser) and waits until the page's module set `window.ready` (or threw).
// `init` runs in the page before any of its scripts.
// `loadMs` bounds the page's load and its wasm start; on a loaded machine (the soak runs
// tabs beside 32 native peers on 2 cores) that takes minutes, not seconds.
export async function openPage(where, server, path, { init, loadMs = 60_000 } = {}) {
  const page = await where.newPage();
  if (init) await page.addInitScript(init);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const consoleLines = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
    consoleLines.push(`${m.type()}: ${m.text()}`);
    if (consoleLines.length > 5000) consoleLines.shift();
  });
  await page.goto(server.url + path, { timeout: loadMs });
  await page.waitForFunction(() => window.ready === true || window.loadError, null, { timeout: loadMs });
  const loadError = await page.evaluate(() => window.loadError ?? null);
  if (loadError) throw new Error(`page failed to load: ${loadError}; console: ${errors.join(' | ')}`);
  return { page, errors, consoleLines };
}

// For tests that join the network `cargo xtask test` starts and describes in
// TABSWARM_NETWORK: that description, and the page server handing it to tabs.
export async function serveNetwork() {
  const hint = 'run `cargo xtask test` (it starts the network this test joins)';
  const file = requireEnv('TABSWARM_NETWORK', hint);
  const server = await startServer({
    pkg: requireEnv('TABSWARM_PKG', hint),
    data: requireEnv('TABSWARM_DATA', hint),
    network: file,
  });
  return { server, network: JSON.parse(readFileSync(file, 'utf8')) };
}

// libp2p-webrtc-websys 0.5 lets the browser call a data channel's callbacks after a failed
// WebRTC connection dropped them (libp2p/rust-libp2p#5636, #6551; fix proposed in #6558): an
// uncaught exception with this exact text and no effect on the tab. Every other page error
// is one.
export const UPSTREAM_WEBRTC_CLOSURE = 'closure invoked recursively or after being dropped';
export const pageErrors = (errors) => errors.filter((e) => e !== UPSTREAM_WEBRTC_CLOSURE);


// Where the tests leave what a person may want to look at (screenshots): `out/e2e/`.
export const ARTIFACTS = join(ROOT, 'out', 'e2e');

// Saves a screenshot of `page` as `out/e2e/<name>.png`; returns its path.
export async function screenshot(page, name) {
  await mkdir(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

// Polls `fn(arg)` in `page` every 250 ms until it returns a truthy value (returned) or `ms`
// pass (an error with the tab's status).
export async function until(page, what, ms, fn, arg) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await page.evaluate(fn, arg);
    if (v) return v;
    await new Promise((ok) => setTimeout(ok, 250));
  }
  const status = await page.evaluate(() => window.tabStatus ?? null);
  throw new Error(`timed out after ${ms / 1000} s waiting for ${what}; status: ${JSON.stringify(status)}`);
}

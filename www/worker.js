// One Web Worker: its own wasm instance and copy of the run's data, running the peer's jobs
// (training, scoring, testing) so the page's thread, where the network lives, never waits.
import init, { JobRunner } from '/pkg/tabswarm_browser.js';

let runner = null;

self.onmessage = async (e) => {
  const m = e.data;
  try {
    if (m.type === 'init') {
      await init();
      const res = await fetch(m.dataset);
      if (!res.ok) throw new Error(`dataset ${m.dataset}: HTTP ${res.status}`);
      runner = new JobRunner(new Uint8Array(await res.arrayBuffer()), m.genesis);
      self.postMessage({ type: 'ready' });
      return;
    }
    if (m.type === 'job') {
      const t0 = performance.now();
      const output = runner.run(m.job);
      const elapsedMs = performance.now() - t0;
      self.postMessage({ type: 'done', id: m.id, output, elapsedMs }, [output.buffer]);
    }
  } catch (err) {
    self.postMessage({ type: 'error', id: m.id, message: String(err?.message ?? err) });
  }
};

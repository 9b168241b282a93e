// One Web Worker: its own wasm instance and copy of the run's data, running the peer's jobs
// (training, scoring, testing), or its share of a training job split across the tab's
// workers, so the page's thread, where the network lives, never waits. The data is the
// page's copy (`dataset`, a URL) or, in a run that keeps its data on the network, the plan
// the tab's peer makes from the shards it fetched (a `plan` message, before any job).
import init, { JobRunner } from '/pkg/tabswarm_browser.js';
import { loadWasm } from './kernels.js';

let runner = null;
let wasm = null;

self.onmessage = async (e) => {
  const m = e.data;
  try {
    if (m.type === 'init') {
      // The page chose the build (kernels.js); every worker runs the same one.
      ({ wasm } = await loadWasm(init, m.kernels));
      let bytes;
      if (m.dataset) {
        const res = await fetch(m.dataset);
        if (!res.ok) throw new Error(`dataset ${m.dataset}: HTTP ${res.status}`);
        bytes = new Uint8Array(await res.arrayBuffer());
      }
      runner = new JobRunner(bytes, m.genesis);
      self.postMessage({ id: m.id, ok: true });
    } else if (m.type === 'plan') {
      runner.use_plan(m.plan);
      self.postMessage({ id: m.id, ok: true });
    } else if (m.type === 'job') {
      const t0 = performance.now();
      const output = runner.run(m.job);
      const elapsedMs = performance.now() - t0;
      self.postMessage({ id: m.id, ok: true, output, elapsedMs }, [output.buffer]);
    } else if (m.type === 'memory') {
      self.postMessage({ id: m.id, ok: true, bytes: wasm?.memory.buffer.byteLength ?? 0 });
    } else if (m.type === 'replica') {
      const slice = runner.replica_start(m.job, m.part, m.parts);
      self.postMessage({ id: m.id, ok: true, slice }, [slice.buffer]);
    } else if (m.type === 'apply') {
      if (runner.replica_apply(m.step) > 0) {
        const slice = runner.replica_gradient();
        self.postMessage({ id: m.id, ok: true, slice }, [slice.buffer]);
      } else {
        const output = runner.replica_finish();
        self.postMessage({ id: m.id, ok: true, output }, [output.buffer]);
      }
    }
  } catch (err) {
    self.postMessage({ id: m.id, ok: false, message: String(err?.message ?? err) });
  }
};

// The "Try the model" worker: the run's model without its data, answering guesses on the
// volunteer's drawings and writing SafeTensors files, so neither waits behind training jobs.
import init, { ModelRunner } from '/pkg/tabswarm_browser.js';
import { loadWasm } from './kernels.js';

let runner = null;

self.onmessage = async (e) => {
  const m = e.data;
  try {
    if (m.type === 'init') {
      await loadWasm(init, m.kernels);
      runner = new ModelRunner(m.genesis);
      self.postMessage({ id: m.id, ok: true });
    } else if (m.type === 'predict') {
      self.postMessage({ id: m.id, ok: true, probs: runner.predict(m.params, m.pixels) });
    } else if (m.type === 'safetensors') {
      const file = runner.safetensors(m.params);
      self.postMessage({ id: m.id, ok: true, file }, [file.buffer]);
    }
  } catch (err) {
    self.postMessage({ id: m.id, ok: false, message: String(err?.message ?? err) });
  }
};

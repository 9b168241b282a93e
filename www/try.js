// "Try the model": the volunteer draws a digit and the newest committed model the tab holds
// guesses it (in a worker of its own), or downloads that model as a SafeTensors file.

// A drawing as MNIST shows digits: the strokes' bounding box scaled into 20 x 20 and centred
// by mass in 28 x 28, white (255) on black.
export function toMnist(canvas) {
  const { width, height } = canvas;
  const src = canvas.getContext('2d').getImageData(0, 0, width, height).data;
  let [x0, y0, x1, y1] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (src[(y * width + x) * 4 + 3] > 0) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return null; // nothing drawn
  const box = Math.max(x1 - x0 + 1, y1 - y0 + 1);
  const small = new OffscreenCanvas(28, 28);
  const ctx = small.getContext('2d');
  const w = ((x1 - x0 + 1) / box) * 20;
  const h = ((y1 - y0 + 1) / box) * 20;
  ctx.drawImage(canvas, x0, y0, x1 - x0 + 1, y1 - y0 + 1, 0, 0, w, h);
  const raw = ctx.getImageData(0, 0, 28, 28).data;
  // Centre of mass of the scaled strokes, moved to the middle of the 28 x 28 image.
  let [mass, mx, my] = [0, 0, 0];
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const a = raw[(y * 28 + x) * 4 + 3];
      mass += a; mx += a * x; my += a * y;
    }
  }
  const dx = Math.round(14 - mx / mass);
  const dy = Math.round(14 - my / mass);
  const pixels = new Uint8Array(28 * 28);
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const [sx, sy] = [x - dx, y - dy];
      if (sx >= 0 && sx < 28 && sy >= 0 && sy < 28) pixels[y * 28 + x] = raw[(sy * 28 + sx) * 4 + 3];
    }
  }
  return pixels;
}

class ModelWorker {
  constructor(genesis, kernels) {
    this.worker = new Worker(new URL('./model-worker.js', import.meta.url), { type: 'module' });
    this.next = 1;
    this.waiting = new Map();
    this.worker.onmessage = (e) => {
      const { id, ok, message, ...rest } = e.data;
      const w = this.waiting.get(id);
      this.waiting.delete(id);
      if (ok) w?.resolve(rest); else w?.reject(new Error(message));
    };
    this.ready = this.call({ type: 'init', genesis, kernels });
  }

  call(msg, transfer = []) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ ...msg, id }, transfer);
    });
  }
}

// Wires the pad in `root` to `tab` (for its committed model) once the tab runs.
export function setupTry({ root, tab, genesis, kernels, onProblem }) {
  const pad = root.querySelector('#pad');
  const guess = root.querySelector('#guess');
  const bars = root.querySelector('#probs');
  const ctx = pad.getContext('2d');
  let worker = null;
  const model = () => (worker ??= new ModelWorker(genesis, kernels));
  let drawing = false;
  let last = null;

  const point = (e) => {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * (pad.width / r.width), (e.clientY - r.top) * (pad.height / r.height)];
  };
  pad.addEventListener('pointerdown', (e) => {
    drawing = true; last = point(e); pad.setPointerCapture(e.pointerId);
  });
  pad.addEventListener('pointermove', (e) => {
    if (!drawing) return;
    const p = point(e);
    ctx.strokeStyle = '#000'; ctx.lineWidth = pad.width / 14; ctx.lineCap = 'round'; ctx.lineJoin = 'round';
    ctx.beginPath(); ctx.moveTo(...last); ctx.lineTo(...p); ctx.stroke();
    last = p;
  });
  const finish = async () => {
    if (!drawing) return;
    drawing = false;
    await predict();
  };
  pad.addEventListener('pointerup', finish);
  pad.addEventListener('pointercancel', finish);
  root.querySelector('#clear').addEventListener('click', () => {
    ctx.clearRect(0, 0, pad.width, pad.height);
    guess.textContent = 'Draw a digit (0 to 9) in the box.';
    bars.replaceChildren();
  });

  async function predict() {
    const pixels = toMnist(pad);
    if (!pixels) return;
    const held = tab.model();
    try {
      await model().ready;
      const { probs } = await model().call({ type: 'predict', params: held.params, pixels });
      const best = probs.indexOf(Math.max(...probs));
      guess.textContent = `The model at height ${held.height} reads a ${best} (${(probs[best] * 100).toFixed(0)}% sure).`;
      bars.replaceChildren(...Array.from(probs, (p, d) => {
        const li = document.createElement('li');
        li.innerHTML = `<span>${d}</span><meter min="0" max="1" value="${p.toFixed(3)}"></meter>`;
        return li;
      }));
      window.lastGuess = { digit: best, probs: Array.from(probs), height: held.height };
    } catch (e) {
      onProblem(`Trying the model failed: ${e.message}`);
    }
  }

  root.querySelector('#download').addEventListener('click', async () => {
    const held = tab.model();
    try {
      await model().ready;
      const { file } = await model().call({ type: 'safetensors', params: held.params });
      const a = document.createElement('a');
      a.href = URL.createObjectURL(new Blob([file], { type: 'application/octet-stream' }));
      a.download = `tabswarm-mnist-height-${held.height}-${held.hash.slice(0, 8)}.safetensors`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    } catch (e) {
      onProblem(`Downloading the model failed: ${e.message}`);
    }
  });
}

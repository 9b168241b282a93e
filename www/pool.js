// The tab's workers. Jobs go to the first idle worker; a throttle below 100% rests each
// worker after a job in proportion to the job's length (duty cycle), so the fans stay quiet.
export class WorkerPool {
  constructor({ size, dataset, genesis }) {
    this.duty = 1.0;
    this.queue = [];
    this.nextId = 1;
    this.pending = new Map();
    this.workers = [];
    this.ready = Promise.all(Array.from({ length: size }, () => this.#spawn(dataset, genesis)));
  }

  #spawn(dataset, genesis) {
    return new Promise((resolve, reject) => {
      const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
      const slot = { w, busy: true };
      w.onmessage = (e) => {
        const m = e.data;
        if (m.type === 'ready') {
          slot.busy = false;
          this.workers.push(slot);
          resolve();
          this.#pump();
          return;
        }
        if (m.type === 'error' && m.id === undefined) { reject(new Error(m.message)); return; }
        const job = this.pending.get(m.id);
        this.pending.delete(m.id);
        const rest = m.type === 'done' ? m.elapsedMs * (1 / this.duty - 1) : 0;
        setTimeout(() => { slot.busy = false; this.#pump(); }, rest);
        if (m.type === 'done') job.resolve({ output: m.output, elapsedMs: m.elapsedMs });
        else job.reject(new Error(m.message));
      };
      w.onerror = (e) => {
        const why = new Error(`a worker failed: ${e.message}`);
        // Its job, if any, fails (the peer then treats it as a failed computation).
        const job = this.pending.get(slot.current);
        this.pending.delete(slot.current);
        job?.reject(why);
        reject(why);
      };
      w.postMessage({ type: 'init', dataset, genesis });
    });
  }

  // Runs one encoded job; resolves to {output, elapsedMs}.
  run(job) {
    return new Promise((resolve, reject) => {
      this.queue.push({ job, resolve, reject });
      this.#pump();
    });
  }

  #pump() {
    for (const slot of this.workers) {
      if (slot.busy || this.queue.length === 0) continue;
      const item = this.queue.shift();
      const id = this.nextId++;
      this.pending.set(id, item);
      slot.busy = true;
      slot.current = id;
      slot.w.postMessage({ type: 'job', id, job: item.job }, [item.job.buffer]);
    }
  }

  get busy() { return this.workers.filter((s) => s.busy).length; }

  terminate() { for (const s of this.workers) s.w.terminate(); }
}

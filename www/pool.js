// The tab's workers. A training job is split across every worker (synchronous data
// parallelism, tabswarm_peer::parallel: each worker computes the gradient of its slice of
// each batch, the page averages them with `average` from the wasm package, every worker
// applies the average); other jobs go to the first idle worker. A throttle below 100% rests
// the workers after a job in proportion to its length (duty cycle), so the fans stay quiet.
export class WorkerPool {
  constructor({ size, dataset, genesis, average }) {
    this.duty = 1.0;
    this.average = average;
    this.queue = [];
    this.nextId = 1;
    this.workers = [];
    this.lastTrain = null; // {workers, elapsedMs} of the newest training job, for the page
    this.ready = Promise.all(Array.from({ length: size }, () => this.#spawn(dataset, genesis)));
  }

  #spawn(dataset, genesis) {
    const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    const slot = { w, busy: true, waiting: new Map() };
    w.onmessage = (e) => {
      const { id, ok, message, ...rest } = e.data;
      const waiter = slot.waiting.get(id);
      slot.waiting.delete(id);
      if (ok) waiter?.resolve(rest); else waiter?.reject(new Error(message));
    };
    w.onerror = (e) => {
      // Whatever it was doing fails (the peer then treats it as a failed computation).
      const why = new Error(`a worker failed: ${e.message}`);
      for (const waiter of slot.waiting.values()) waiter.reject(why);
      slot.waiting.clear();
    };
    return this.#ask(slot, { type: 'init', dataset, genesis }).then(() => {
      slot.busy = false;
      this.workers.push(slot);
      this.#pump();
    });
  }

  #ask(slot, msg, transfer = []) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      slot.waiting.set(id, { resolve, reject });
      slot.w.postMessage({ ...msg, id }, transfer);
    });
  }

  // Runs one encoded job of `kind` ('train', 'validate', 'test'); resolves to
  // {output, elapsedMs}.
  run(job, kind) {
    return new Promise((resolve, reject) => {
      this.queue.push({ job, all: kind === 'train' && this.workers.length > 1, resolve, reject });
      this.#pump();
    });
  }

  #pump() {
    while (this.queue.length) {
      const idle = this.workers.filter((s) => !s.busy);
      const item = this.queue[0];
      // A split training job waits for every worker; jobs behind it wait their turn, so it
      // is never starved by a stream of small jobs.
      if (item.all ? idle.length < this.workers.length : idle.length === 0) return;
      this.queue.shift();
      const slots = item.all ? idle : [idle[0]];
      for (const s of slots) s.busy = true;
      const t0 = performance.now();
      const work = item.all ? this.#train(slots, item.job) : this.#single(slots[0], item.job);
      work.then(item.resolve, item.reject).finally(() => {
        const rest = (performance.now() - t0) * (1 / this.duty - 1);
        setTimeout(() => { for (const s of slots) s.busy = false; this.#pump(); }, rest);
      });
    }
  }

  async #single(slot, job) {
    const { output, elapsedMs } = await this.#ask(slot, { type: 'job', job }, [job.buffer]);
    return { output, elapsedMs };
  }

  async #train(slots, job) {
    const t0 = performance.now();
    const parts = slots.length;
    let answers = await Promise.all(slots.map((s, part) =>
      this.#ask(s, { type: 'replica', job: job.slice(), part, parts })));
    for (;;) {
      const step = this.average(answers.map((a) => a.slice));
      answers = await Promise.all(slots.map((s) => this.#ask(s, { type: 'apply', step: step.slice() })));
      if (answers[0].output) {
        const elapsedMs = performance.now() - t0;
        this.lastTrain = { workers: parts, elapsedMs };
        return { output: answers[0].output, elapsedMs };
      }
    }
  }

  get busy() { return this.workers.filter((s) => s.busy).length; }

  terminate() { for (const s of this.workers) s.w.terminate(); }
}

// The tab's workers. A training job can be split across every worker (synchronous data
// parallelism, tabswarm_peer::parallel: each worker computes the gradient of its slice of
// each batch, the page averages them with `average` from the wasm package, every worker
// applies the average); other jobs go to the first idle worker. Splitting pays only when a
// step's compute outweighs moving its gradient through the page twice: for the MNIST MLP at
// batch 32 a split job took 4x as long as one worker alone (`cargo xtask bench --only
// browser`). So with `split: 'auto'` the pool times both ways on the first jobs, keeps the
// faster, and tries the other again now and then (load changes); 'always' and 'never' force
// one. A throttle below 100% rests the workers after a job in proportion to its length (duty
// cycle), so the fans stay quiet.
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };
const PROBE_JOBS = 3; // training jobs timed each way before choosing
const REPROBE_EVERY = 40; // training jobs between two tries of the way not chosen

export class WorkerPool {
  // `dataset`: the URL of the page's copy of the data, or null in a run that keeps its data
  // on the network (the tab's peer then hands the plan to `setPlan`).
  constructor({ size, dataset, genesis, kernels, average, split = 'auto' }) {
    this.plan = null; // the newest data plan (encoded), for workers that start after it
    this.planError = null;
    this.duty = 1.0;
    this.average = average;
    this.split = split;
    this.timed = { split: [], single: [] }; // recent wall times of training jobs, each way
    this.trainJobs = 0;
    this.queue = [];
    this.nextId = 1;
    this.workers = [];
    this.lastTrain = null; // {workers, elapsedMs} of the newest training job, for the page
    this.trained = 0; // training jobs finished
    this.ready = Promise.all(Array.from({ length: size }, () => this.#spawn(dataset, genesis, kernels)));
  }

  #spawn(dataset, genesis, kernels) {
    const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    const slot = { w, busy: true, waiting: new Map(), plan: null };
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
    return this.#ask(slot, { type: 'init', dataset, genesis, kernels }).then(async () => {
      // A newer plan may arrive while this one is on its way: the worker joins the pool only
      // with the newest (the peer's jobs index into it).
      while (this.plan && slot.plan !== this.plan) {
        const plan = this.plan;
        await this.#givePlan(slot, plan);
        slot.plan = plan;
      }
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

  // Hands every worker the data plan the tab's peer made (an encoded DataPlan). A worker
  // takes its messages in order, so the jobs the peer sends after it run on it; a worker
  // still starting gets it before its first job.
  setPlan(plan) {
    this.plan = plan;
    for (const slot of this.workers) {
      this.#givePlan(slot, plan);
      slot.plan = plan; // its messages are taken in order: every later job sees this plan
    }
  }

  #givePlan(slot, plan) {
    return this.#ask(slot, { type: 'plan', plan }).then(
      () => { this.planError = null; },
      (e) => { this.planError = String(e?.message ?? e); });
  }

  // Runs one encoded job of `kind` ('train', 'validate', 'test'); resolves to
  // {output, elapsedMs}.
  run(job, kind) {
    const train = kind === 'train';
    return new Promise((resolve, reject) => {
      this.queue.push({ job, train, all: train && this.#splitNext(), resolve, reject });
      this.#pump();
    });
  }

  // Whether the next training job is split across the workers.
  #splitNext() {
    if (this.workers.length < 2 || this.split === 'never') return false;
    if (this.split === 'always') return true;
    const n = this.trainJobs++;
    // One worker first (the way that cannot be slow), then split.
    if (n < 2 * PROBE_JOBS) return n >= PROBE_JOBS;
    const faster = this.splitFaster();
    const reprobe = n % REPROBE_EVERY === 0;
    const split = reprobe ? !faster : faster;
    this.choice = { split, reprobe, medians: { split: median(this.timed.split), single: median(this.timed.single) } };
    return split;
  }

  // Whether split jobs have been faster than single-worker ones (median of recent times).
  splitFaster() {
    const { split, single } = this.timed;
    return split.length > 0 && single.length > 0 && median(split) < median(single);
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
        const wall = performance.now() - t0;
        if (item.train) {
          this.trained += 1;
          const way = this.timed[item.all ? 'split' : 'single'];
          way.push(wall);
          if (way.length > 2 * PROBE_JOBS) way.shift();
          this.lastTrain = { workers: slots.length, elapsedMs: wall };
        }
        const rest = wall * (1 / this.duty - 1);
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
        return { output: answers[0].output, elapsedMs: performance.now() - t0 };
      }
    }
  }

  // Bytes of wasm memory the workers hold (benchmarks; answered between jobs).
  async wasmBytes() {
    const answers = await Promise.all(this.workers.map((s) => this.#ask(s, { type: 'memory' })));
    return answers.reduce((n, a) => n + a.bytes, 0);
  }

  get busy() { return this.workers.filter((s) => s.busy).length; }

  terminate() { for (const s of this.workers) s.w.terminate(); }
}

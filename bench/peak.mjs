// The browser's float ceiling for `cargo xtask bench`: tiny wasm modules, assembled here,
// whose loop is nothing but independent f32x4 multiply-adds. Timed in the same page as the
// training step, they say what fraction of this core's wasm SIMD rate the step reaches.
//
// Assembled by hand rather than compiled from Rust because a module that uses relaxed SIMD
// fails validation as a whole where the browser lacks it, and our main module must load
// everywhere; two small modules, one per instruction, also make the comparison exact.

// Independent accumulators: the multiply-add latency (4 cycles) times the two vector ports
// needs 8 in flight; 12 leave slack and, with the two operands and a temporary, stay within
// the 15 SIMD registers V8 allocates on x64, so nothing spills.
export const REGISTERS = 12;
// Loop body repeats per back-edge, so the counter's work is noise.
const UNROLL = 4;
const LANES = 4;

const leb = (n) => {
  const out = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
};
const section = (id, bytes) => [id, ...leb(bytes.length), ...bytes];
const f32 = (x) => [...new Uint8Array(new Float32Array([x]).buffer)];
const simd = (op) => [0xfd, ...leb(op)];
const F32X4_SPLAT = 0x13, F32X4_EXTRACT = 0x1f, F32X4_ADD = 0xe4, F32X4_MUL = 0xe6;
const F32X4_RELAXED_MADD = 0x105;

// `run(iters: i32, a: f32, b: f32) -> f32`: x = x * a + b on every accumulator, `iters`
// times, then the sum of all lanes (so the work cannot be dropped).
function assemble(fused) {
  const ITERS = 0, A = 1, B = 2, ACC = 3, VA = ACC + REGISTERS, VB = VA + 1;
  const get = (i) => [0x20, ...leb(i)], set = (i) => [0x21, ...leb(i)];
  const code = [];
  code.push(...get(A), ...simd(F32X4_SPLAT), ...set(VA));
  code.push(...get(B), ...simd(F32X4_SPLAT), ...set(VB));
  for (let r = 0; r < REGISTERS; r++) code.push(0x43, ...f32(r * 1e-3), ...simd(F32X4_SPLAT), ...set(ACC + r));
  code.push(0x03, 0x40); // loop
  for (let u = 0; u < UNROLL; u++) {
    for (let r = 0; r < REGISTERS; r++) {
      if (fused) code.push(...get(ACC + r), ...get(VA), ...get(VB), ...simd(F32X4_RELAXED_MADD));
      else code.push(...get(ACC + r), ...get(VA), ...simd(F32X4_MUL), ...get(VB), ...simd(F32X4_ADD));
      code.push(...set(ACC + r));
    }
  }
  // iters -= 1; continue while non-zero
  code.push(...get(ITERS), 0x41, 1, 0x6b, 0x22, ...leb(ITERS), 0x0d, 0, 0x0b);
  code.push(...get(ACC));
  for (let r = 1; r < REGISTERS; r++) code.push(...get(ACC + r), ...simd(F32X4_ADD));
  code.push(...set(VA));
  for (let lane = 0; lane < LANES; lane++) {
    code.push(...get(VA), ...simd(F32X4_EXTRACT), lane);
    if (lane) code.push(0x92); // f32.add
  }
  code.push(0x0b);
  const body = [1, ...leb(REGISTERS + 2), 0x7b, ...code]; // one run of v128 locals
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 3, 0x7f, 0x7d, 0x7d, 1, 0x7d]),
    ...section(3, [1, 0]),
    ...section(7, [1, 3, ...new TextEncoder().encode('run'), 0, 0]),
    ...section(10, [1, ...leb(body.length), ...body]),
  ]);
}

export const KERNELS = {
  simd128_mul_add: {
    what: 'wasm f32x4.mul then f32x4.add (what simd128 code without relaxed SIMD has, e.g. gemm\'s wasm kernel)',
    bytes: assemble(false),
    // Multiplies go to the FMA ports, adds also to add-only ports, whose number varies by core.
    theoretical_flops_per_cycle: null,
    theory: '4 lanes x (multiplies + adds per cycle): 8 flops per cycle where two ports take either, 12 where a third port adds (Intel Golden Cove), 16 with two add-only ports (AMD Zen)',
  },
  relaxed_madd: {
    what: 'wasm f32x4.relaxed_madd (relaxed SIMD; V8 emits a fused multiply-add where the CPU has FMA)',
    bytes: assemble(true),
    theoretical_flops_per_cycle: 16,
    theory: '2 FMA ports x 4 lanes x 2 flops = 16 flops per cycle where the engine fuses (V8 on x64 with FMA3)',
  },
};

const FLOPS_PER_ITER = 2 * LANES * REGISTERS * UNROLL;

// Which kernels this browser validates; a kernel that fails validation is not run.
export function support() {
  return Object.fromEntries(Object.entries(KERNELS).map(([name, k]) => [name, WebAssembly.validate(k.bytes)]));
}

export function describe() {
  return Object.fromEntries(Object.entries(KERNELS).map(([name, k]) => [name, {
    what: k.what, lanes: LANES, registers: REGISTERS, theoretical_flops_per_cycle: k.theoretical_flops_per_cycle, theory: k.theory,
  }]));
}

// Instances ready to time, with V8's optimising tier in place (it replaces the baseline code
// only for calls that start after the tier-up, so warm up with many short calls).
export async function prepare() {
  const ready = {};
  for (const [name, k] of Object.entries(KERNELS)) {
    if (!WebAssembly.validate(k.bytes)) continue;
    const { instance } = await WebAssembly.instantiate(k.bytes);
    const run = instance.exports.run;
    for (let i = 0; i < 200; i++) run(2000, 0.9999, 1e-4);
    ready[name] = run;
  }
  return ready;
}

export const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

// GFLOP/s of each prepared kernel: calls of about 20 ms, median of 7, and (where the port
// count makes it unambiguous) the clock that rate implies: near the core's real clock, the
// kernel is at the hardware's limit.
export function measure(ready, now) {
  const out = {};
  for (const [name, run] of Object.entries(ready)) {
    let iters = 1 << 12;
    for (;;) {
      const t0 = now();
      run(iters, 0.9999, 1e-4);
      const ms = now() - t0;
      if (ms > 5) { iters = Math.ceil(iters * 20 / ms); break; }
      iters *= 4;
    }
    const rates = [];
    for (let s = 0; s < 7; s++) {
      const t0 = now();
      run(iters, 0.9999, 1e-4);
      rates.push(FLOPS_PER_ITER * iters / ((now() - t0) / 1e3) / 1e9);
    }
    const gflops = median(rates);
    const perCycle = KERNELS[name].theoretical_flops_per_cycle;
    out[name] = perCycle ? { gflops, implied_ghz: gflops / perCycle } : { gflops };
  }
  return out;
}

// Which build of the wasm package this browser runs. `cargo xtask` ships two builds of the
// same code: simd128 (every current browser) and relaxed SIMD (fused multiply-add in the
// matmul kernel, ~1.1x faster training steps where the browser has it). The JS glue is the
// same for both (xtask checks), so only the .wasm file differs.

// The smallest modules using an instruction of each feature; a browser without the feature
// refuses to validate them. simd128: i8x16.splat. Relaxed SIMD: i8x16.relaxed_swizzle (the
// probe of the wasm-feature-detect library).
const SIMD128_PROBE = [0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123,
  3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11];
const RELAXED_PROBE = [0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123,
  3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15, 253, 128, 2, 11];

const validates = (bytes) => {
  try { return WebAssembly.validate(new Uint8Array(bytes)); } catch { return false; }
};

export const simd128Supported = () => validates(SIMD128_PROBE);
export const relaxedSimdSupported = () => validates(RELAXED_PROBE);

const URLS = {
  relaxed: '/pkg/tabswarm_browser_relaxed_bg.wasm',
  simd128: '/pkg/tabswarm_browser_bg.wasm',
};

// The build to run: relaxed SIMD where the browser validates it, unless `requested` (the
// page's ?kernels=) says simd128. Asking for relaxed on a browser without it gets simd128.
export function chooseKernels(requested) {
  if (requested && !(requested in URLS)) {
    throw new Error(`?kernels=${requested}: use relaxed or simd128`);
  }
  if (requested === 'simd128' || !relaxedSimdSupported()) return 'simd128';
  return 'relaxed';
}

// Instantiates the package's glue (`init` from tabswarm_browser.js) with the chosen build.
// If the relaxed build cannot be fetched or compiled, the simd128 one still runs the tab:
// a volunteer never loses the page to the faster path. Returns the wasm exports and the
// build that runs.
export async function loadWasm(init, kernels) {
  if (kernels === 'relaxed') {
    try {
      return { wasm: await init({ module_or_path: URLS.relaxed }), kernels };
    } catch (e) {
      console.warn(`relaxed SIMD build did not load (${e?.message ?? e}); using simd128`);
    }
  }
  return { wasm: await init({ module_or_path: URLS.simd128 }), kernels: 'simd128' };
}

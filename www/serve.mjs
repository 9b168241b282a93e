// Serves the volunteer page for `cargo xtask demo` on 127.0.0.1 (the same static server the
// browser tests use): the page, the wasm package, the dataset, and /network.json naming the
// demo's relay and nodes. Runs until stopped.
import { requireEnv, startServer } from '../tests/e2e/harness.mjs';

const hint = 'run `cargo xtask demo`';
const server = await startServer({
  pkg: requireEnv('TABSWARM_PKG', hint),
  data: requireEnv('TABSWARM_DATA', hint),
  network: requireEnv('TABSWARM_NETWORK', hint),
  port: Number(process.env.PORT ?? 8080),
});
console.log(server.url);

// The tab's identity: a 32-byte secret made once with crypto.getRandomValues and kept in
// IndexedDB, so the credit this browser earns survives reloads. The keys are derived from
// it in wasm (tabswarm_browser::TabKeys); the secret never leaves the browser.
import { IDENTITY, openDb, run } from './store.js';

// Each open tab is its own peer: two tabs sharing one identity would fight over one libp2p
// peer id (one relay reservation, one connection per node). So identities live in numbered
// slots, and a tab holds its slot with a Web Lock for as long as it is open: the first tab
// takes slot 0, a second one slot 1, and a reload or a reopened tab finds its old slot free
// again (the browser releases a closed page's locks), with the credit earned under it.
const MAX_SLOTS = 64;

async function claimSlot() {
  if (!navigator.locks) return 0; // no Web Locks: one identity for the browser, as before
  for (let slot = 0; slot < MAX_SLOTS; slot++) {
    const held = await new Promise((resolve) => {
      navigator.locks.request(`tabswarm-identity-${slot}`, { ifAvailable: true }, (lock) => {
        if (!lock) { resolve(false); return undefined; }
        resolve(true);
        return new Promise(() => {}); // held until the page goes away
      });
    });
    if (held) return slot;
  }
  throw new Error(`more than ${MAX_SLOTS} tabs of this page are open`);
}

// This tab's secret (slot `slot`), made and stored first if there is none. Without IndexedDB
// (private windows in some browsers) the tab gets a fresh identity each load and says so.
export async function loadSecret() {
  const slot = await claimSlot();
  const key = slot === 0 ? 'secret' : `secret-${slot}`;
  try {
    const db = await openDb();
    let secret = await run(db, IDENTITY, 'readonly', (s) => s.get(key));
    if (!(secret instanceof Uint8Array) || secret.length !== 32) {
      secret = crypto.getRandomValues(new Uint8Array(32));
      await run(db, IDENTITY, 'readwrite', (s) => s.put(secret, key));
    }
    db.close();
    return { secret, slot, persistent: true };
  } catch {
    return { secret: crypto.getRandomValues(new Uint8Array(32)), slot, persistent: false };
  }
}

// The tab's identity: a 32-byte secret made once with crypto.getRandomValues and kept in
// IndexedDB, so the credit this browser earns survives reloads. The keys are derived from
// it in wasm (tabswarm_browser::TabKeys); the secret never leaves the browser.
const DB = 'tabswarm';
const STORE = 'identity';

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function run(db, mode, fn) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = fn(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error);
  });
}

// The stored secret, made and stored first if there is none. Without IndexedDB (private
// windows in some browsers) the tab gets a fresh identity each load and says so.
export async function loadSecret() {
  try {
    const db = await open();
    let secret = await run(db, 'readonly', (s) => s.get('secret'));
    if (!(secret instanceof Uint8Array) || secret.length !== 32) {
      secret = crypto.getRandomValues(new Uint8Array(32));
      await run(db, 'readwrite', (s) => s.put(secret, 'secret'));
    }
    db.close();
    return { secret, persistent: true };
  } catch {
    return { secret: crypto.getRandomValues(new Uint8Array(32)), persistent: false };
  }
}

// The page's IndexedDB: identities (identity.js), the verified chain a tab resumes from, and
// the run's data a tab fetched (manifest, grant, sealed shards), so a reload trains at once.
const DB = 'tabswarm';
export const IDENTITY = 'identity';
export const CACHE = 'cache';

export function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 2);
    req.onupgradeneeded = () => {
      for (const store of [IDENTITY, CACHE]) {
        if (!req.result.objectStoreNames.contains(store)) req.result.createObjectStore(store);
      }
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export function run(db, store, mode, fn) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const req = fn(tx.objectStore(store));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error);
  });
}

// What was saved under `key`, or undefined: 'chain' is the newest tab's (all tabs follow one
// run), 'data' / 'data-<slot>' one identity's (each reads its own training shards). The
// peer verifies both before use.
export async function loadCache(key = 'chain') {
  try {
    const db = await openDb();
    const bytes = await run(db, CACHE, 'readonly', (s) => s.get(key));
    db.close();
    return bytes instanceof Uint8Array ? bytes : undefined;
  } catch {
    return undefined;
  }
}

export async function saveCache(bytes, key = 'chain') {
  try {
    const db = await openDb();
    await run(db, CACHE, 'readwrite', (s) => s.put(bytes, key));
    db.close();
  } catch { /* no storage here: the next load fetches from the network */ }
}

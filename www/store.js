// The page's IndexedDB: identities (identity.js) and the verified chain a tab resumes from.
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

// The chain cache the newest tab saved (any tab of this page: all follow the same chain, and
// the peer verifies it before use), or undefined.
export async function loadCache() {
  try {
    const db = await openDb();
    const bytes = await run(db, CACHE, 'readonly', (s) => s.get('chain'));
    db.close();
    return bytes instanceof Uint8Array ? bytes : undefined;
  } catch {
    return undefined;
  }
}

export async function saveCache(bytes) {
  try {
    const db = await openDb();
    await run(db, CACHE, 'readwrite', (s) => s.put(bytes, 'chain'));
    db.close();
  } catch { /* no storage here: the next load catches up from the network */ }
}

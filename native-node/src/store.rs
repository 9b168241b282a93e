//! The node's durable state in one redb file: identity, genesis, ledger, write-ahead log,
//! signer state, parameter checkpoints, peer addresses.
//!
//! Every consensus [`Record`] is written in its own committed transaction (redb's default
//! `Durability::Immediate` fsyncs on commit), and the event loop waits for that commit before
//! acting on the next output, so a vote never leaves before the signer state that allows it
//! is on disk. Values are consensus's versioned, size-limited record bytes.

use std::path::Path;

use anyhow::{Context, bail};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tabswarm_consensus::node::{Persisted, Record};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("wal");
const CHECKPOINTS: TableDefinition<u64, &[u8]> = TableDefinition::new("checkpoints");
const PEERS: TableDefinition<&str, &str> = TableDefinition::new("peers");
/// Updates of the height in progress: key = height (8 bytes, big-endian) || update id,
/// value = 4-byte little-endian announcement length || announcement || payload.
const UPDATES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("updates");

const IDENTITY: &str = "identity";
const SIGNER: &str = "signer";
const GENESIS: &str = "genesis";
/// The newest committed parameters: 8-byte little-endian height, then the parameter bytes.
const PARAMS: &str = "params";
const SCHEMA: &str = "schema";
/// Bumped when the layout changes; an older binary refuses a newer file instead of guessing.
const SCHEMA_VERSION: u8 = 1;
/// Most peer addresses remembered.
const MAX_PEERS: usize = 256;

/// The open database.
#[derive(Debug)]
pub(crate) struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the store at `path`. Only one process may hold it.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        let db = Database::create(path).with_context(|| {
            format!(
                "opening {} (is another tabswarm-node using this --home?)",
                path.display()
            )
        })?;
        // The store holds the node's secret key: readable by its owner only.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| format!("making {} private (mode 0600)", path.display()))?;
        let store = Self { db };
        let txn = store.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let version = meta.get(SCHEMA)?.map(|v| v.value().first().copied());
            match version {
                None => {
                    meta.insert(SCHEMA, [SCHEMA_VERSION].as_slice())?;
                }
                Some(Some(SCHEMA_VERSION)) => {}
                Some(v) => bail!(
                    "{} has store schema {v:?}; this build reads {SCHEMA_VERSION}: use a matching tabswarm-node",
                    path.display()
                ),
            }
            txn.open_table(BLOCKS)?;
            txn.open_table(WAL)?;
            txn.open_table(CHECKPOINTS)?;
            txn.open_table(PEERS)?;
            txn.open_table(UPDATES)?;
        }
        txn.commit()?;
        Ok(store)
    }

    fn get_meta(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    /// The 32-byte identity seed, if `init` ran.
    pub(crate) fn identity(&self) -> anyhow::Result<Option<[u8; 32]>> {
        match self.get_meta(IDENTITY)? {
            None => Ok(None),
            Some(bytes) => bytes
                .try_into()
                .map(Some)
                .map_err(|_| anyhow::anyhow!("the stored identity is damaged (not 32 bytes)")),
        }
    }

    /// Stores the identity seed; refuses to replace a different one.
    pub(crate) fn set_identity(&self, seed: &[u8; 32]) -> anyhow::Result<()> {
        if let Some(existing) = self.identity()? {
            if &existing != seed {
                bail!("this home already has an identity; use another --home for a new one");
            }
            return Ok(());
        }
        self.put_meta(IDENTITY, seed)
    }

    /// The genesis JSON this store was started with.
    pub(crate) fn genesis(&self) -> anyhow::Result<Option<String>> {
        self.get_meta(GENESIS)?
            .map(|b| String::from_utf8(b).context("stored genesis is not UTF-8"))
            .transpose()
    }

    /// Binds the store to a run; a store never changes runs.
    pub(crate) fn set_genesis(&self, json: &str) -> anyhow::Result<()> {
        self.put_meta(GENESIS, json.as_bytes())
    }

    /// Makes `record` durable.
    pub(crate) fn persist(&self, record: &Record) -> anyhow::Result<()> {
        let bytes = record.encode().context("encoding a consensus record")?;
        let txn = self.db.begin_write()?;
        match record {
            Record::Wal(_) => {
                let mut wal = txn.open_table(WAL)?;
                let next = wal.last()?.map_or(0, |(k, _)| k.value() + 1);
                wal.insert(next, bytes.as_slice())?;
            }
            Record::Signer(_) => {
                txn.open_table(META)?.insert(SIGNER, bytes.as_slice())?;
            }
            Record::Block(block) => {
                txn.open_table(BLOCKS)?
                    .insert(block.height.0, bytes.as_slice())?;
                // The log of a decided height is no longer needed.
                txn.open_table(WAL)?.retain(|_, _| false)?;
            }
            _ => bail!("unknown consensus record kind"),
        }
        txn.commit()?;
        Ok(())
    }

    /// Everything consensus needs to restart.
    pub(crate) fn load(&self) -> anyhow::Result<Persisted> {
        let mut persisted = Persisted::default();
        let txn = self.db.begin_read()?;
        let decode = |what: &str, bytes: &[u8]| {
            Record::decode(bytes).with_context(|| format!("stored {what} is damaged"))
        };
        for entry in txn.open_table(BLOCKS)?.iter()? {
            let (height, bytes) = entry?;
            let record = decode(&format!("block {}", height.value()), bytes.value())?;
            persisted.apply(&record);
        }
        if let Some(bytes) = txn.open_table(META)?.get(SIGNER)? {
            persisted.apply(&decode("signer state", bytes.value())?);
        }
        for entry in txn.open_table(WAL)?.iter()? {
            let (_, bytes) = entry?;
            persisted.apply(&decode("write-ahead log entry", bytes.value())?);
        }
        Ok(persisted)
    }

    /// Stores the parameters committed at `height`.
    pub(crate) fn put_checkpoint(&self, height: u64, params: &[u8]) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(CHECKPOINTS)?;
            table.insert(height, params)?;
            // Two checkpoints suffice: the newest, and the one before in case the newest is
            // being replaced when the process dies (redb commits atomically anyway).
            let keep: Vec<u64> = table
                .iter()?
                .rev()
                .take(2)
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            table.retain(|k, _| keep.contains(&k))?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Replaces the newest committed parameters (written at every commit, so a restart of
    /// the whole network needs no peer to hand them back).
    pub(crate) fn put_params(&self, height: u64, params: &[u8]) -> anyhow::Result<()> {
        let mut value = Vec::with_capacity(8 + params.len());
        value.extend_from_slice(&height.to_le_bytes());
        value.extend_from_slice(params);
        self.put_meta(PARAMS, &value)
    }

    /// The newest committed parameters written by [`Store::put_params`].
    pub(crate) fn params(&self) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        Ok(self.get_meta(PARAMS)?.and_then(|v| {
            let (h, p) = v.split_at_checked(8)?;
            Some((u64::from_le_bytes(h.try_into().ok()?), p.to_vec()))
        }))
    }

    /// The newest checkpoint: (height, parameter bytes).
    pub(crate) fn latest_checkpoint(&self) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHECKPOINTS)?;
        Ok(table.last()?.map(|(k, v)| (k.value(), v.value().to_vec())))
    }

    /// Keeps an update (announcement and payload) of a height not yet committed, so a
    /// restart of every node mid-height can still apply the block a replayed write-ahead log
    /// decides. Written without fsync: the next consensus record's commit makes it durable.
    pub(crate) fn put_update(
        &self,
        height: u64,
        id: &[u8; 32],
        announcement: &[u8],
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let mut key = height.to_be_bytes().to_vec();
        key.extend_from_slice(id);
        let mut value = Vec::with_capacity(4 + announcement.len() + payload.len());
        value.extend_from_slice(&(announcement.len() as u32).to_le_bytes());
        value.extend_from_slice(announcement);
        value.extend_from_slice(payload);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut table = txn.open_table(UPDATES)?;
            table.insert(key.as_slice(), value.as_slice())?;
            // Heights before this one are decided: their updates are in the parameters.
            let below = height.to_be_bytes();
            table.retain(|k, _| k >= below.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Stored updates: (announcement bytes, payload bytes).
    pub(crate) fn updates(&self) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for entry in txn.open_table(UPDATES)?.iter()? {
            let (_, value) = entry?;
            let v = value.value();
            let Some((len, rest)) = v.split_at_checked(4) else {
                continue;
            };
            let len = u32::from_le_bytes(len.try_into()?) as usize;
            if let Some((a, p)) = rest.split_at_checked(len) {
                out.push((a.to_vec(), p.to_vec()));
            }
        }
        Ok(out)
    }

    /// Remembers where a peer was reachable.
    pub(crate) fn remember_peer(&self, peer: &str, addr: &str) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(PEERS)?;
            if table.len()? as usize >= MAX_PEERS && table.get(peer)?.is_none() {
                return Ok(());
            }
            table.insert(peer, addr)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Remembered peer addresses.
    pub(crate) fn peers(&self) -> anyhow::Result<Vec<(String, String)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PEERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_owned(), v.value().to_owned()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_holding_the_secret_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tabswarm-store-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.redb");
        let store = Store::open(&path).unwrap();
        store.set_identity(&[7; 32]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The run's data on disk: `<home>/data/epoch-<n>/` holds the signed `manifest`, `grants/`
//! and `shards/`, each file named by the hex of its address (shards) or hash (grants).
//!
//! Plain files rather than the redb store: shards are large, written once and read whole,
//! and an operator can see, back up or delete them with the usual tools. A damaged file costs
//! nothing but a download: the peer checks every shard against the signed manifest when it
//! starts and fetches a damaged one again. Writes go to a temporary name first and are
//! renamed into place, so a crash never leaves half a file under a real name.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tabswarm_consensus::genesis::{hex, unhex32};
use tabswarm_core::vault::{MAX_GRANT_BYTES, MAX_MANIFEST_BYTES, MAX_SHARD_BYTES};
use tabswarm_peer::RestoredData;
use tabswarm_peer::data::DataRecord;

use crate::data_cmd::write_atomically;

/// Most files read back per kind (a run lists at most 65,536 shards).
const MAX_FILES: usize = 70_000;

/// A home's data folder.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub(crate) fn new(home: &Path) -> Self {
        Self {
            root: home.join("data"),
        }
    }

    fn epoch_dir(&self, epoch: u64) -> PathBuf {
        self.root.join(format!("epoch-{epoch}"))
    }

    /// Epochs on disk, oldest first.
    pub(crate) fn epochs(&self) -> anyhow::Result<Vec<u64>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.root.display())),
        };
        for entry in entries {
            let name = entry?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix("epoch-"))
                .and_then(|n| n.parse().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The newest epoch on disk with a manifest.
    pub(crate) fn newest(&self) -> anyhow::Result<Option<u64>> {
        Ok(self
            .epochs()?
            .into_iter()
            .rev()
            .find(|e| self.epoch_dir(*e).join("manifest").exists()))
    }

    /// Makes a record durable.
    pub(crate) fn apply(&self, record: &DataRecord) -> anyhow::Result<()> {
        match record {
            DataRecord::Manifest(bytes) => {
                let epoch = manifest_epoch(bytes)?;
                write_atomically(&self.epoch_dir(epoch).join("manifest"), bytes)
            }
            DataRecord::Grant { epoch, bytes } => {
                let name = hex(&Sha256::digest(bytes));
                write_atomically(&self.epoch_dir(*epoch).join("grants").join(name), bytes)
            }
            DataRecord::Shard {
                epoch,
                address,
                bytes,
            } => write_atomically(
                &self.epoch_dir(*epoch).join("shards").join(hex(address)),
                bytes,
            ),
            DataRecord::Forget { epoch, address } => {
                let path = self.epoch_dir(*epoch).join("shards").join(hex(address));
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(e).with_context(|| format!("removing {}", path.display()))
                    }
                    _ => Ok(()),
                }
            }
            DataRecord::Prune { epoch } => {
                for old in self.epochs()?.into_iter().filter(|e| e < epoch) {
                    let dir = self.epoch_dir(old);
                    fs::remove_dir_all(&dir)
                        .with_context(|| format!("removing {}", dir.display()))?;
                }
                Ok(())
            }
        }
    }

    /// Everything stored, for the peer to check and take back.
    pub(crate) fn load(&self) -> anyhow::Result<RestoredData> {
        let mut data = RestoredData::default();
        let Some(epoch) = self.newest()? else {
            return Ok(data);
        };
        let dir = self.epoch_dir(epoch);
        data.manifests
            .push(read_limited(&dir.join("manifest"), MAX_MANIFEST_BYTES)?);
        for (_, path) in files(&dir.join("grants"))? {
            data.grants.push(read_limited(&path, MAX_GRANT_BYTES)?);
        }
        for (name, path) in files(&dir.join("shards"))? {
            if let Some(address) = unhex32(&name) {
                data.shards
                    .push((address, read_limited(&path, MAX_SHARD_BYTES)?));
            }
        }
        Ok(data)
    }

    /// The stored shard at `address` of `epoch`, if any.
    pub(crate) fn shard(&self, epoch: u64, address: &[u8; 32]) -> anyhow::Result<Option<Vec<u8>>> {
        let path = self.epoch_dir(epoch).join("shards").join(hex(address));
        if !path.exists() {
            return Ok(None);
        }
        read_limited(&path, MAX_SHARD_BYTES).map(Some)
    }

    /// The stored grants of `epoch`.
    pub(crate) fn grants(&self, epoch: u64) -> anyhow::Result<Vec<Vec<u8>>> {
        files(&self.epoch_dir(epoch).join("grants"))?
            .into_iter()
            .map(|(_, p)| read_limited(&p, MAX_GRANT_BYTES))
            .collect()
    }

    /// The stored manifest of `epoch`.
    pub(crate) fn manifest(&self, epoch: u64) -> anyhow::Result<Vec<u8>> {
        read_limited(&self.epoch_dir(epoch).join("manifest"), MAX_MANIFEST_BYTES)
    }
}

fn manifest_epoch(bytes: &[u8]) -> anyhow::Result<u64> {
    // The peer verified the signature before asking us to store it; the epoch names the folder.
    let signed = tabswarm_core::vault::SignedManifest::decode(bytes).context("manifest")?;
    Ok(signed.epoch())
}

fn files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries.take(MAX_FILES) {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(".partial") {
            continue;
        }
        out.push((name, entry.path()));
    }
    out.sort();
    Ok(out)
}

fn read_limited(path: &Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    let len = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > limit as u64 {
        anyhow::bail!(
            "{} is {len} bytes, over the limit of {limit}: remove it (the node fetches what it needs again)",
            path.display()
        );
    }
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_names_parse_back_and_others_are_skipped() {
        let a = [0xab; 32];
        assert_eq!(unhex32(&hex(&a)), Some(a));
        assert_eq!(unhex32("zz"), None);
        assert_eq!(unhex32(&"g".repeat(64)), None);
    }
}

//! What a simulated peer has on "disk": the persist effects it asked for, through bytes as a
//! store would write them, and the [`Restored`] a restart reads back.

use tabswarm_consensus::node::{Persisted, Record};
use tabswarm_peer::{Persist, Restored};

/// A peer's store.
#[derive(Debug, Default, Clone)]
pub struct Disk {
    /// Consensus records.
    pub persisted: Persisted,
    /// The newest committed parameters (height, little-endian f32 bytes).
    pub params: Option<(u64, Vec<u8>)>,
    /// The newest checkpoint.
    pub checkpoint: Option<(u64, Vec<u8>)>,
    /// Updates of heights not yet committed: (height, announcement, payload).
    pub updates: Vec<(u64, Vec<u8>, Vec<u8>)>,
}

impl Disk {
    /// Applies one persist effect. A consensus record goes through its encoding, as a host
    /// writing to disk would: what a restart gets back is what `Record::decode` reads.
    pub fn apply(&mut self, p: Persist) -> Result<(), String> {
        match p {
            Persist::Consensus(record) => {
                let bytes = record.encode().map_err(|e| e.to_string())?;
                let record = Record::decode(&bytes).map_err(|e| e.to_string())?;
                if let Record::Block(b) = &record {
                    let h = b.height.0;
                    self.updates.retain(|(uh, _, _)| *uh > h);
                }
                self.persisted.apply(&record);
            }
            Persist::Params {
                height,
                bytes,
                checkpoint,
            } => {
                self.params = Some((height, bytes.to_vec()));
                if checkpoint {
                    self.checkpoint = Some((height, bytes.to_vec()));
                }
            }
            Persist::Update {
                height,
                announcement,
                payload,
                ..
            } => self.updates.push((height, announcement, payload)),
            // The simulator's runs keep their data in the peers' plans, not on the network.
            Persist::Data(_) => {}
        }
        Ok(())
    }

    /// What a restarted peer reads.
    pub fn restored(&self) -> Restored {
        Restored {
            persisted: self.persisted.clone(),
            params: self
                .params
                .iter()
                .chain(self.checkpoint.iter())
                .cloned()
                .collect(),
            updates: self
                .updates
                .iter()
                .map(|(_, a, p)| (a.clone(), p.clone()))
                .collect(),
            data: Default::default(),
        }
    }

    /// Committed height on disk.
    pub fn height(&self) -> u64 {
        self.persisted.blocks.len() as u64
    }
}

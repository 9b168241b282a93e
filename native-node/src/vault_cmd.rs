//! `data add`, `data grant`, `data ls`, `data get`: the run's data on the network, from the
//! owner's side (sealing, granting) and any holder's (listing, reading with a grant).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};
use tabswarm_consensus::genesis::{Access, DataPolicy, Genesis, hex, unhex32};
use tabswarm_consensus::identity::Keypair;
use tabswarm_core::data::Dataset;
use tabswarm_core::vault::{
    DatasetKey, Grant, Layout, Manifest, MemberKey, MemberSecret, Part, SignedManifest, seal_shards,
};
use tabswarm_peer::data::DataRecord;
use tabswarm_peer::jobs::DataPlan;

use crate::cli::{DataAddArgs, DataGrantArgs};
use crate::data_dir::DataDir;
use crate::net_cmd::{identity, open_store};

/// The home's identity seed (the node must be stopped: its store is locked while it runs).
fn seed(home: &Path) -> anyhow::Result<[u8; 32]> {
    let store = open_store(home).with_context(|| {
        format!(
            "opening {} (stop its node first: data commands need its store)",
            home.display()
        )
    })?;
    identity(&store, home)
}

/// The genesis file given, else the one stored in a home (written at the node's first start).
fn stored_genesis(home: &Path, run: Option<&Path>) -> anyhow::Result<Genesis> {
    if let Some(path) = run {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading genesis {}", path.display()))?;
        return Genesis::from_json(&text).context("genesis");
    }
    let store = open_store(home)?;
    let text = store.genesis()?.with_context(|| {
        format!(
            "{} has not joined a run yet: pass --run <genesis file>, or start its node once with --genesis",
            home.display()
        )
    })?;
    Genesis::from_json(&text).context("stored genesis")
}

fn policy(genesis: &Genesis) -> anyhow::Result<&DataPolicy> {
    genesis.data.as_ref().context(
        "this run keeps no data on the network: its genesis has no data section (make one with \
         `tabswarm-node genesis --data-owner <public key>`)",
    )
}

/// `<public key hex>:<member key hex>` as the two keys.
fn parse_member(text: &str) -> anyhow::Result<(VerifyingKey, MemberKey)> {
    let bad = || {
        format!(
            "--member {text:?}: expected <public key hex>:<member key hex>, as `tabswarm-node init` prints them"
        )
    };
    let (id, member) = text.split_once(':').with_context(bad)?;
    let id = unhex32(id).with_context(bad)?;
    let member = unhex32(member).with_context(bad)?;
    let id = VerifyingKey::from_bytes(&id).ok().with_context(bad)?;
    Ok((id, MemberKey(member)))
}

pub(crate) fn add(args: DataAddArgs) -> anyhow::Result<()> {
    let seed = seed(&args.home)?;
    let text = std::fs::read_to_string(&args.run)
        .with_context(|| format!("reading genesis {}", args.run.display()))?;
    let genesis = Genesis::from_json(&text).context("genesis")?;
    let policy = policy(&genesis)?;
    let owner = Keypair::from_seed(seed);
    if policy.owner != owner.address() {
        bail!(
            "this home's key {} is not the run's data owner {}: run `data add` in the owner's home",
            hex(&owner.address().0),
            hex(&policy.owner.0)
        );
    }
    let mut members = vec![(owner.public_key(), MemberSecret::derive(&seed).public())];
    for m in &args.members {
        members.push(parse_member(m)?);
    }
    let dataset = crate::data_cmd::load(&args.path)?;
    // The run's plan cuts the data (training shards, validation and test sets) exactly as
    // peers that read a local copy do, so both kinds of peer train on the same shards.
    let plan = DataPlan::new(&dataset, &genesis.training).context("cutting the dataset")?;
    let mut parts: Vec<Dataset> = plan.shards().iter().map(|s| (**s).clone()).collect();
    parts.push(plan.validation().clone());
    parts.push(plan.test().clone());
    let layout = Layout {
        train: plan.shards().len() as u32,
        validation: 1,
        test: 1,
    };
    let dir = DataDir::new(&args.home);
    let epoch = dir.newest()?.map_or(1, |e| e + 1);
    let run = genesis.run_id().0;
    let mut rng = rand::rng();
    let key = match policy.access {
        Access::Open { key } => DatasetKey::from_bytes(run, epoch, key),
        Access::Closed => DatasetKey::generate(run, epoch, &mut rng),
    };
    let sealed = seal_shards(&parts, layout, &key, &mut rng).context("sealing the shards")?;
    let signing = SigningKey::from_bytes(&seed);
    let manifest = SignedManifest::sign(sealed.manifest.clone(), &signing)
        .context("signing the manifest")?
        .encode();
    for (shard, entry) in sealed.shards.into_iter().zip(&sealed.manifest.shards) {
        dir.apply(&DataRecord::Shard {
            epoch,
            address: entry.address,
            bytes: Arc::new(shard.into_bytes()),
        })?;
    }
    let grants = write_grants(&dir, epoch, &signing, &key, &members)?;
    // The manifest last: a home with a manifest has every shard it lists.
    dir.apply(&DataRecord::Manifest(manifest))?;
    dir.apply(&DataRecord::Prune { epoch })?;
    let bytes: u64 = sealed
        .manifest
        .shards
        .iter()
        .map(|e| u64::from(e.size))
        .sum();
    println!(
        "epoch {epoch}: {} shards ({} training, validation {} digits, test {} digits), {:.1} MB sealed, {grants} grants ({})",
        sealed.manifest.shards.len(),
        layout.train,
        plan.validation().len(),
        plan.test().len(),
        bytes as f64 / 1e6,
        match policy.access {
            Access::Open { .. } => "open run: the key is in the genesis",
            Access::Closed => "closed run: only members can read",
        }
    );
    eprintln!(
        "start the node of {} to serve them; storage peers keep {} copies of each",
        args.home.display(),
        policy.replication
    );
    Ok(())
}

fn write_grants(
    dir: &DataDir,
    epoch: u64,
    owner: &SigningKey,
    key: &DatasetKey,
    members: &[(VerifyingKey, MemberKey)],
) -> anyhow::Result<usize> {
    let mut rng = rand::rng();
    for (id, member) in members {
        let grant = Grant::seal(owner, key, id, *member, &mut rng)
            .with_context(|| format!("granting {}", hex(id.as_bytes())))?;
        dir.apply(&DataRecord::Grant {
            epoch,
            bytes: grant.encode(),
        })?;
    }
    Ok(members.len())
}

pub(crate) fn grant(args: DataGrantArgs) -> anyhow::Result<()> {
    let seed = seed(&args.home)?;
    let genesis = stored_genesis(&args.home, args.run.as_deref())?;
    let (epoch, manifest) = newest_manifest(&args.home, &genesis)?;
    let key = own_key(&args.home, &genesis, epoch, &seed)?;
    let members = args
        .members
        .iter()
        .map(|m| parse_member(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let n = write_grants(
        &DataDir::new(&args.home),
        epoch,
        &SigningKey::from_bytes(&seed),
        &key,
        &members,
    )?;
    println!(
        "epoch {epoch}: granted {n} members the key of {} shards; restart the node to serve the grants",
        manifest.shards.len()
    );
    Ok(())
}

/// The newest manifest in a home, verified against the run's owner.
fn newest_manifest(home: &Path, genesis: &Genesis) -> anyhow::Result<(u64, Manifest)> {
    let policy = policy(genesis)?;
    let dir = DataDir::new(home);
    let epoch = dir.newest()?.with_context(|| {
        format!(
            "{} holds none of the run's data yet (the owner adds it with `data add`; other nodes fetch it while they run)",
            home.display()
        )
    })?;
    let signed = SignedManifest::decode(&dir.manifest(epoch)?).context("stored manifest")?;
    let owner = policy
        .owner
        .public_key()
        .context("the genesis data owner key is invalid")?;
    let manifest = signed
        .verify(&owner, &genesis.run_id().0)
        .context("the stored manifest is not the data owner's for this run")?
        .clone();
    Ok((epoch, manifest))
}

/// The dataset key of `epoch`: the genesis's in an open run, else from this node's grant.
fn own_key(
    home: &Path,
    genesis: &Genesis,
    epoch: u64,
    seed: &[u8; 32],
) -> anyhow::Result<DatasetKey> {
    let policy = policy(genesis)?;
    let run = genesis.run_id().0;
    if let Access::Open { key } = policy.access {
        return Ok(DatasetKey::from_bytes(run, epoch, key));
    }
    let owner = policy.owner.public_key().context("invalid owner key")?;
    let me = Keypair::from_seed(*seed).public_key();
    let member = MemberSecret::derive(seed);
    for bytes in DataDir::new(home).grants(epoch)? {
        let Ok(grant) = Grant::decode(&bytes) else {
            continue;
        };
        if grant
            .verify(&owner, &run)
            .is_ok_and(|b| b.member == me.to_bytes())
            && let Ok(key) = grant.open(&owner, &run, &member)
        {
            return Ok(key);
        }
    }
    bail!(
        "this node (key {}) holds no grant for epoch {epoch} of the run's data: it stores and serves the \
         encrypted shards but cannot read them. The data owner grants it with \
         `tabswarm-node data grant --member {}:{}`",
        hex(me.as_bytes()),
        hex(me.as_bytes()),
        hex(&member.public().0)
    )
}

pub(crate) fn ls(home: &Path, run: Option<&Path>) -> anyhow::Result<()> {
    let genesis = stored_genesis(home, run)?;
    let (epoch, manifest) = newest_manifest(home, &genesis)?;
    let dir = DataDir::new(home);
    let grants = dir.grants(epoch)?.len();
    println!(
        "epoch {epoch}: {} shards, {} samples, {grants} grants held",
        manifest.shards.len(),
        manifest.samples()
    );
    let mut held_bytes = 0u64;
    for (i, e) in manifest.shards.iter().enumerate() {
        let held = dir.shard(epoch, &e.address)?.is_some();
        if held {
            held_bytes += u64::from(e.size);
        }
        let part = match manifest.layout.part(i as u32) {
            Some(Part::Train) => "train",
            Some(Part::Validation) => "validation",
            Some(Part::Test) => "test",
            None => "?",
        };
        println!(
            "{i:>5}  {part:<10}  {:>7} samples  {:>9} bytes  {}  {}",
            e.samples,
            e.size,
            &hex(&e.address)[..16],
            if held { "held" } else { "-" }
        );
    }
    println!("{:.1} MB held", held_bytes as f64 / 1e6);
    Ok(())
}

pub(crate) fn get(
    home: &Path,
    shard: Option<u32>,
    out: &Path,
    run: Option<&Path>,
) -> anyhow::Result<()> {
    let seed = seed(home)?;
    let genesis = stored_genesis(home, run)?;
    let (epoch, manifest) = newest_manifest(home, &genesis)?;
    let key = own_key(home, &genesis, epoch, &seed)?;
    let dir = DataDir::new(home);
    let indices: Vec<u32> = match shard {
        Some(i) if (i as usize) < manifest.shards.len() => vec![i],
        Some(i) => bail!(
            "shard {i} does not exist: the manifest lists {} (see `data ls`)",
            manifest.shards.len()
        ),
        None => (0..manifest.shards.len() as u32).collect(),
    };
    let mut parts = Vec::new();
    for i in indices {
        let address = manifest.shards[i as usize].address;
        let Some(bytes) = dir.shard(epoch, &address)? else {
            if shard.is_some() {
                bail!("this node does not hold shard {i} (see `data ls`)");
            }
            continue;
        };
        let data = manifest
            .open_shard(i, &bytes, &key)
            .with_context(|| format!("shard {i}"))?;
        parts.push(data);
    }
    let joined = Dataset::concat(&parts).context("this node holds no shard yet (see `data ls`)")?;
    crate::data_cmd::write_atomically(out, &joined.encode())?;
    println!("{}: {} samples", out.display(), joined.len());
    Ok(())
}

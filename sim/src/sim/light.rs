//! Light peers and the gossip layer they use.
//!
//! **Light peers** do not vote. Each height, an online light peer signs (real ed25519) a tiny
//! update announcement `(height, update id, trainer key)` and sends it straight to the
//! validators that will propose that height: the proposers of rounds `0..attach`, which it
//! computes itself from the last committed block hash, as validators do. So only those few
//! validators receive announcements, and the proposer receives all of them: its traffic
//! grows as O(N) in the number of light peers by design (it must hear every update it is to
//! include). Nobody else's does.
//!
//! **Commit notices** (the committed block with its commit certificate, what a peer needs to
//! follow the chain and learn the next proposer) travel over a gossipsub-like mesh: every
//! node (validators and light peers) keeps about D mesh links (D_lo = 3D/4 .. D_hi = 3D/2),
//! pushes the first copy of a notice to all its links but the one it came from, and drops
//! later copies (duplicate suppression by message id = sha256(height, block hash), so the
//! notices of all validators for one height are one message). Before forwarding, a peer
//! sends IDONTWANT(id) to its links (gossipsub v1.2), and skips links that told it so. Each
//! peer thus sends and receives a notice at most about D times per height whatever N is;
//! what grows with N is only the number of hops, O(log_D N), i.e. latency.
//! Light peers verify the certificate (stake from genesis: light runs slash nobody) before
//! forwarding.
//!
//! **Churn**: at every new height, `churn_per_mille` thousandths of the online light peers
//! leave (their links vanish) and as many offline peers join with empty state. A joiner
//! GRAFTs D random online peers; the first one that has a notice sends it its latest. A
//! heartbeat at each height tops up every node whose degree fell below D_lo.
//!
//! Sizes are the postcard encoding plus the version byte, like consensus messages; control
//! messages (GRAFT, IDONTWANT) are counted too. Transport framing is not. Messages are
//! encoded once to be measured and recipients get the typed value.
//!
//! Not modelled: the proposal does not carry the announced updates (the simulator's
//! application proposes `updates_per_round` synthetic ones), so validators' proposal traffic
//! does not grow with N here; with real updates it grows up to the `MAX_UPDATES` cap.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use malachitebft_core_types::Round;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use tabswarm_consensus::codec;
use tabswarm_consensus::context::{Height, TabswarmContext, ValidatorSet};
use tabswarm_consensus::genesis::Genesis;
use tabswarm_consensus::identity::{Address, Keypair, Signature};
use tabswarm_consensus::ledger::Block;
use tabswarm_consensus::testkit::key;

use super::{Event, roll};
use crate::config::LightPeers;

/// Domain of a (simulated) update announcement signature.
const ANNOUNCE_DOMAIN: &[u8] = b"tabswarm/sim/announcement/v1\0";
/// Key indices of light peers start here (validators use 0..).
const LIGHT_KEY_BASE: u32 = 1 << 24;

/// A light-layer message.
#[derive(Debug)]
pub(super) enum LightMsg {
    /// A signed update announcement, light peer -> validator.
    Announce {
        height: u64,
        update_id: [u8; 32],
        trainer: Address,
        signature: Signature,
    },
    /// A commit notice, gossiped.
    Commit { id: [u8; 32], block: Rc<Block> },
    /// gossipsub v1.2 IDONTWANT.
    DontWant([u8; 32]),
    /// gossipsub GRAFT (mesh link request).
    Graft,
}

impl LightMsg {
    fn size(&self) -> u32 {
        let body = match self {
            LightMsg::Announce {
                height,
                update_id,
                trainer,
                signature,
            } => codec::canonical(&(0u8, height, update_id, trainer, signature)).len(),
            LightMsg::Commit { block, .. } => codec::canonical(&(1u8, &**block)).len(),
            LightMsg::DontWant(id) => codec::canonical(&(2u8, id)).len(),
            // Topic name as in gossipsub's GRAFT.
            LightMsg::Graft => codec::canonical(&(3u8, "tabswarm/commits")).len(),
        };
        body as u32 + 1
    }
}

/// What the light layer measured (integers, so reports compare exactly).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LightReport {
    /// Light peers online at a time.
    pub peers: usize,
    /// Heights the light layer saw committed.
    pub heights: u64,
    /// Light peers' bytes (sent + received) per peer per online height: mean over all
    /// peer-heights, and the largest single peer's.
    pub light_bytes_per_peer_height_mean: u64,
    /// See `light_bytes_per_peer_height_mean`.
    pub light_bytes_per_peer_height_max: u64,
    /// Validators' light-layer bytes (announcements, notices, control) per validator per
    /// height: mean and max.
    pub validator_light_bytes_per_height_mean: u64,
    /// See `validator_light_bytes_per_height_mean`.
    pub validator_light_bytes_per_height_max: u64,
    /// Validators' consensus plus light-layer bytes per validator per height: mean and max.
    pub validator_bytes_per_height_mean: u64,
    /// See `validator_bytes_per_height_mean`.
    pub validator_bytes_per_height_max: u64,
    /// Announcement bytes one validator received for one height: the largest (a proposer)
    /// and the mean over validators and heights.
    pub announce_bytes_per_validator_height_max: u64,
    /// See `announce_bytes_per_validator_height_max`.
    pub announce_bytes_per_validator_height_mean: u64,
    /// Virtual ms from a height's first commit to a light peer (online at that time)
    /// receiving its notice: p50, p99, max.
    pub notice_delay_ms_p50: u64,
    /// See `notice_delay_ms_p50`.
    pub notice_delay_ms_p99: u64,
    /// See `notice_delay_ms_p50`.
    pub notice_delay_ms_max: u64,
    /// Announcements whose signature verified at a validator.
    pub announcements_verified: u64,
    /// Messages refused (bad signature or certificate).
    pub refused: u64,
    /// Duplicate notice copies received (and dropped).
    pub duplicates: u64,
    /// Notice copies not sent thanks to IDONTWANT.
    pub dont_want_saved: u64,
    /// Light peers that joined / left.
    pub joins: u64,
    /// See `joins`.
    pub leaves: u64,
    /// GRAFTs sent.
    pub grafts: u64,
}

/// The latest commit notice a node holds: height, message id, block.
type Tip = (u64, [u8; 32], Rc<Block>);

/// State of the light layer. Node ids: validators `0..v`, light peer `p` is `v + p`.
pub(super) struct Light {
    cfg: LightPeers,
    v: usize,
    ctx: TabswarmContext,
    genesis_set: ValidatorSet,
    run_id: [u8; 32],
    slot_of: HashMap<Address, u32>,
    keys: Vec<Keypair>,
    online: Vec<bool>,
    joined_at: Vec<u64>,
    offline: VecDeque<usize>,
    validator_up: Vec<bool>,
    mesh: Vec<Vec<u32>>,
    seen: Vec<VecDeque<[u8; 32]>>,
    dont_want: Vec<VecDeque<(u32, [u8; 32])>>,
    tip: Vec<Option<Tip>>,
    sent: Vec<u64>,
    recv: Vec<u64>,
    heights_online: Vec<u64>,
    announce_recv: HashMap<(u32, u64), u64>,
    proposers: HashMap<(u64, [u8; 32]), Vec<u32>>,
    first_commit: HashMap<u64, u64>,
    delays: Vec<u64>,
    ticks: u64,
    rng: ChaCha8Rng,
    stats: LightReport,
    /// Deliveries to schedule: (at, event).
    pub(super) out: Vec<(u64, Event)>,
}

impl Light {
    pub(super) fn new(cfg: LightPeers, genesis: &Genesis, v: usize, seed: u64) -> Self {
        let run_id = genesis.run_id().0;
        let ctx = TabswarmContext::new(genesis.run_id());
        let genesis_set = ValidatorSet::new(genesis.validators.iter().copied(), run_id);
        let slot_of = (0..v as u32).map(|i| (key(i).address(), i)).collect();
        let churn = churn_count(cfg.count, cfg.churn_per_mille);
        let population = cfg.count + 2 * churn;
        let nodes = v + population;
        let mut l = Self {
            v,
            ctx,
            genesis_set,
            run_id,
            slot_of,
            keys: (0..population as u32)
                .map(|p| key(LIGHT_KEY_BASE + p))
                .collect(),
            online: (0..population).map(|p| p < cfg.count).collect(),
            joined_at: vec![0; population],
            offline: (cfg.count..population).collect(),
            validator_up: vec![true; v],
            mesh: vec![Vec::new(); nodes],
            seen: vec![VecDeque::new(); nodes],
            dont_want: vec![VecDeque::new(); nodes],
            tip: vec![None; nodes],
            sent: vec![0; nodes],
            recv: vec![0; nodes],
            heights_online: vec![0; population],
            announce_recv: HashMap::new(),
            proposers: HashMap::new(),
            first_commit: HashMap::new(),
            delays: Vec::new(),
            ticks: 0,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x11_9e_e7),
            stats: LightReport {
                peers: cfg.count,
                ..LightReport::default()
            },
            out: Vec::new(),
            cfg,
        };
        l.heartbeat(0);
        let run_id = l.run_id;
        for p in 0..l.cfg.count {
            l.announce(0, p, 1, run_id);
        }
        l
    }

    fn d_lo(&self) -> usize {
        (self.cfg.mesh_degree * 3 / 4).max(1)
    }

    fn d_hi(&self) -> usize {
        self.cfg.mesh_degree * 3 / 2 + 1
    }

    fn is_up(&self, node: u32) -> bool {
        let n = node as usize;
        if n < self.v {
            self.validator_up[n]
        } else {
            self.online[n - self.v]
        }
    }

    pub(super) fn set_validator_up(&mut self, i: usize, up: bool) {
        if let Some(x) = self.validator_up.get_mut(i) {
            *x = up;
        }
    }

    /// One-way latency of a link: fixed per link (a hash of its ends), plus jitter.
    fn delay(&mut self, a: u32, b: u32) -> u64 {
        let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
        let mut z = lo.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ hi;
        z = (z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z ^= z >> 29;
        self.cfg.latency_ms + z % 21 + roll(&mut self.rng, 11)
    }

    fn send(&mut self, now: u64, from: u32, to: u32, msg: Rc<LightMsg>) {
        let size = msg.size();
        self.sent[from as usize] += u64::from(size);
        let at = now + self.delay(from, to);
        self.out.push((
            at,
            Event::Light {
                to,
                from,
                msg,
                size,
            },
        ));
    }

    /// Validators proposing rounds `0..attach` of `height`, from the block hash before it.
    fn proposers_for(&mut self, height: u64, seed: [u8; 32]) -> Vec<u32> {
        if let Some(p) = self.proposers.get(&(height, seed)) {
            return p.clone();
        }
        let set = ValidatorSet::new(
            self.genesis_set
                .validators()
                .iter()
                .map(|x| (x.address, x.power)),
            seed,
        );
        let mut out: Vec<u32> = Vec::new();
        for r in 0..self.cfg.attach.max(1) as u32 {
            if let Some(p) = set.proposer(Height(height), Round::new(r))
                && let Some(&i) = self.slot_of.get(&p.address)
                && !out.contains(&i)
            {
                out.push(i);
            }
        }
        if self.proposers.len() > 64 {
            self.proposers.clear();
        }
        self.proposers.insert((height, seed), out.clone());
        out
    }

    fn announce(&mut self, now: u64, p: usize, height: u64, seed: [u8; 32]) {
        let mut update_id = [0u8; 32];
        update_id[..8].copy_from_slice(&(p as u64).to_le_bytes());
        update_id[8..16].copy_from_slice(&height.to_le_bytes());
        let trainer = self.keys[p].address();
        let signature =
            self.keys[p].sign_raw(&announce_bytes(&self.run_id, height, &update_id, &trainer));
        let msg = Rc::new(LightMsg::Announce {
            height,
            update_id,
            trainer,
            signature,
        });
        for t in self.proposers_for(height, seed) {
            self.send(now, (self.v + p) as u32, t, msg.clone());
        }
    }

    fn link(&mut self, a: u32, b: u32) {
        self.mesh[a as usize].push(b);
        self.mesh[b as usize].push(a);
    }

    fn graft_one(&mut self, now: u64, node: u32) -> bool {
        let population = self.online.len();
        for _ in 0..32 {
            let q = (self.v + roll(&mut self.rng, population as u64) as usize) as u32;
            if q == node
                || !self.is_up(q)
                || self.mesh[node as usize].contains(&q)
                || self.mesh[q as usize].len() >= self.d_hi()
            {
                continue;
            }
            self.link(node, q);
            self.stats.grafts += 1;
            let g = u64::from(LightMsg::Graft.size());
            self.sent[node as usize] += g;
            self.recv[q as usize] += g;
            // The new neighbour hands a joiner the latest notice it has.
            if self.tip[node as usize].is_none()
                && let Some((_, id, block)) = self.tip[q as usize].clone()
            {
                let msg = Rc::new(LightMsg::Commit { id, block });
                self.send(now, q, node, msg);
            }
            return true;
        }
        false
    }

    /// Tops up every node below D_lo to D links.
    fn heartbeat(&mut self, now: u64) {
        let (d, d_lo) = (self.cfg.mesh_degree, self.d_lo());
        for node in 0..self.mesh.len() as u32 {
            if !self.is_up(node) || self.mesh[node as usize].len() >= d_lo {
                continue;
            }
            while self.mesh[node as usize].len() < d {
                if !self.graft_one(now, node) {
                    break;
                }
            }
        }
    }

    /// A height was committed for the first time: churn, heartbeat, count online heights.
    pub(super) fn on_new_height(&mut self, now: u64, height: u64) {
        self.first_commit.entry(height).or_insert(now);
        self.ticks += 1;
        let k = churn_count(self.cfg.count, self.cfg.churn_per_mille);
        let mut left = Vec::new();
        for _ in 0..k {
            let online: usize = self.online.len();
            // Pick a random online peer (most are online, so this ends fast).
            for _ in 0..64 {
                let p = roll(&mut self.rng, online as u64) as usize;
                if self.online[p] {
                    self.leave(p);
                    left.push(p);
                    break;
                }
            }
        }
        for _ in 0..left.len() {
            if let Some(p) = self.offline.pop_front() {
                self.join(now, p);
            }
        }
        self.offline.extend(left);
        self.heartbeat(now);
        for p in 0..self.online.len() {
            if self.online[p] {
                self.heights_online[p] += 1;
            }
        }
    }

    fn leave(&mut self, p: usize) {
        let node = (self.v + p) as u32;
        for n in std::mem::take(&mut self.mesh[node as usize]) {
            self.mesh[n as usize].retain(|&x| x != node);
        }
        self.online[p] = false;
        self.stats.leaves += 1;
    }

    fn join(&mut self, now: u64, p: usize) {
        let node = self.v + p;
        self.online[p] = true;
        self.joined_at[p] = now;
        self.seen[node].clear();
        self.dont_want[node].clear();
        self.tip[node] = None;
        self.stats.joins += 1;
        for _ in 0..self.cfg.mesh_degree {
            if !self.graft_one(now, node as u32) {
                break;
            }
        }
    }

    /// Validator `i` committed `block`: it publishes the notice to its mesh links.
    pub(super) fn publish(&mut self, now: u64, i: usize, block: &Block) {
        let id = notice_id(block);
        self.on_commit(now, i as u32, None, id, Rc::new(block.clone()));
    }

    pub(super) fn deliver(&mut self, now: u64, to: u32, from: u32, msg: &LightMsg, size: u32) {
        if !self.is_up(to) {
            return;
        }
        self.recv[to as usize] += u64::from(size);
        match msg {
            LightMsg::Announce {
                height,
                update_id,
                trainer,
                signature,
            } => {
                let bytes = announce_bytes(&self.run_id, *height, update_id, trainer);
                if (to as usize) < self.v && signature.verify(trainer, &bytes) {
                    self.stats.announcements_verified += 1;
                    *self.announce_recv.entry((to, *height)).or_default() += u64::from(size);
                } else {
                    self.stats.refused += 1;
                }
            }
            LightMsg::DontWant(id) => {
                let q = &mut self.dont_want[to as usize];
                if q.len() >= 4 * self.cfg.mesh_degree.max(8) {
                    q.pop_front();
                }
                q.push_back((from, *id));
            }
            LightMsg::Graft => {}
            LightMsg::Commit { id, block } => {
                self.on_commit(now, to, Some(from), *id, block.clone());
            }
        }
    }

    fn on_commit(&mut self, now: u64, x: u32, from: Option<u32>, id: [u8; 32], block: Rc<Block>) {
        let xi = x as usize;
        if self.seen[xi].contains(&id) {
            self.stats.duplicates += 1;
            return;
        }
        if self.seen[xi].len() >= 16 {
            self.seen[xi].pop_front();
        }
        self.seen[xi].push_back(id);
        if from.is_some() {
            let cert_ok = block.certificate.value_id
                == malachitebft_core_types::Value::id(&block.value)
                && block.certificate.height == block.height
                && block
                    .certificate
                    .verify(&self.ctx, &self.genesis_set)
                    .is_ok();
            if !cert_ok {
                self.stats.refused += 1;
                return;
            }
        }
        let h = block.height.0;
        let newer = self.tip[xi].as_ref().is_none_or(|(th, _, _)| h > *th);
        if newer {
            let hash = block.hash();
            self.tip[xi] = Some((h, id, block.clone()));
            if xi >= self.v {
                let p = xi - self.v;
                if let Some(&t0) = self.first_commit.get(&h)
                    && self.joined_at[p] <= t0
                {
                    self.delays.push(now - t0);
                }
                self.announce(now, p, h + 1, hash);
            }
        }
        let links = self.mesh[xi].clone();
        let dont = Rc::new(LightMsg::DontWant(id));
        for &n in &links {
            if Some(n) != from {
                self.send(now, x, n, dont.clone());
            }
        }
        let msg = Rc::new(LightMsg::Commit { id, block });
        for n in links {
            if Some(n) == from {
                continue;
            }
            if self.dont_want[xi].contains(&(n, id)) {
                self.stats.dont_want_saved += 1;
                continue;
            }
            self.send(now, x, n, msg.clone());
        }
    }

    /// The measurements; `consensus` is each validator's consensus bytes (sent + received).
    pub(super) fn report(&self, consensus: &[u64]) -> LightReport {
        let mut r = self.stats.clone();
        let heights = self.ticks.max(1);
        r.heights = self.ticks;
        let mut total = 0u64;
        let mut peer_heights = 0u64;
        let mut max = 0u64;
        for p in 0..self.online.len() {
            let b = self.sent[self.v + p] + self.recv[self.v + p];
            let hs = self.heights_online[p];
            if hs == 0 {
                continue;
            }
            total += b;
            peer_heights += hs;
            max = max.max(b / hs);
        }
        r.light_bytes_per_peer_height_mean = total / peer_heights.max(1);
        r.light_bytes_per_peer_height_max = max;
        let light_v: Vec<u64> = (0..self.v)
            .map(|i| (self.sent[i] + self.recv[i]) / heights)
            .collect();
        let all_v: Vec<u64> = (0..self.v)
            .map(|i| {
                (self.sent[i] + self.recv[i] + consensus.get(i).copied().unwrap_or(0)) / heights
            })
            .collect();
        let mean = |xs: &[u64]| xs.iter().sum::<u64>() / xs.len().max(1) as u64;
        r.validator_light_bytes_per_height_mean = mean(&light_v);
        r.validator_light_bytes_per_height_max = light_v.iter().copied().max().unwrap_or(0);
        r.validator_bytes_per_height_mean = mean(&all_v);
        r.validator_bytes_per_height_max = all_v.iter().copied().max().unwrap_or(0);
        r.announce_bytes_per_validator_height_max =
            self.announce_recv.values().copied().max().unwrap_or(0);
        r.announce_bytes_per_validator_height_mean =
            self.announce_recv.values().sum::<u64>() / (self.v as u64 * heights);
        let mut d = self.delays.clone();
        d.sort_unstable();
        let pct = |q: f64| {
            if d.is_empty() {
                0
            } else {
                d[((d.len() - 1) as f64 * q).round() as usize]
            }
        };
        r.notice_delay_ms_p50 = pct(0.5);
        r.notice_delay_ms_p99 = pct(0.99);
        r.notice_delay_ms_max = d.last().copied().unwrap_or(0);
        r
    }
}

fn churn_count(count: usize, per_mille: u32) -> usize {
    (count * per_mille as usize).div_ceil(1000)
}

fn notice_id(block: &Block) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tabswarm/sim/notice-id\0");
    h.update(block.height.0.to_le_bytes());
    h.update(block.hash());
    h.finalize().into()
}

fn announce_bytes(run: &[u8; 32], height: u64, update_id: &[u8; 32], trainer: &Address) -> Vec<u8> {
    let mut out = ANNOUNCE_DOMAIN.to_vec();
    out.extend_from_slice(run);
    out.extend_from_slice(&codec::canonical(&(height, update_id, trainer)));
    out
}

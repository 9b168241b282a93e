//! The training round as the consensus application (DESIGN.md, "A round"): what the proposer
//! proposes, how validators judge a proposal, what every peer applies on commit.
//!
//! Aggregation is core's fixed-order weighted mean, so every peer computes the same parameter
//! bytes and hash. Scores (validation losses) come from jobs the driver runs off its loop:
//! this module asks for them ([`RoundApp::take_jobs`]) and judges only with scores in hand;
//! the peer holds a proposal back until the scores it needs are here.
//!
//! ## Judging (threat model: "harm cannot compound")
//! - Each update alone must not raise the validation loss past `base * 1.5 + 0.5`: a coarse
//!   filter for junk.
//! - The **aggregate** must not raise it past `base * (1 + AGGREGATE_FACTOR) + AGGREGATE_SLACK`.
//!   An attacker who stays just under the per-update line every height would otherwise walk
//!   the model away; with the aggregate judged too, each height can cost at most that small
//!   budget, and honest updates win it back. A proposer whose aggregate fails the budget drops
//!   its worst-scored update and tries again.
//! - Every update has the same weight, fixed by the rules (local steps x batch size).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use malachitebft_core_types::Round;
use tabswarm_consensus::context::{Height, IncludedUpdate, RoundProposal};
use tabswarm_consensus::genesis::{AggregationRule, Genesis, TrainingRules};
use tabswarm_consensus::identity::Address;
use tabswarm_consensus::ledger::Block;
use tabswarm_consensus::node::Application;
use tabswarm_consensus::update::SignedUpdate;
use tabswarm_core::{flat, robust};

use crate::jobs::{Job, ScoreKey, update_weight, validation_draw};
use crate::pool::{Admitted, Entry, Pool, Refusal};

/// An update whose validation loss exceeds `base * FACTOR + SLACK` is refused as harmful.
pub const HARM_FACTOR: f32 = 1.5;
/// See [`HARM_FACTOR`].
pub const HARM_SLACK: f32 = 0.5;
/// An aggregate may raise the validation loss by at most this share of the base loss ...
pub const AGGREGATE_FACTOR: f32 = 0.05;
/// ... plus this much.
pub const AGGREGATE_SLACK: f32 = 0.02;
/// Most updates one proposal includes (each must be fetched by every validator).
pub const MAX_INCLUDED: usize = 32;
/// First round in which a proposal may include no update (see `RoundApp::min_updates`).
pub const EMPTY_FROM_ROUND: i64 = 2;
/// Heights a trainer counts as active after its last announcement (on time or late).
const ACTIVE_HEIGHTS: u64 = 3;
/// A late announcement (for a height already decided) counts as a sign of life if it is at
/// most this many heights old: a trainer slower than the chain finishes several heights late.
pub const LATE_HEIGHTS: u64 = 16;
/// Most trainers a proposer waits for: past [`MAX_INCLUDED`] it could not include them all
/// anyway, and trainer keys are free.
const MAX_ACTIVE: usize = 4 * MAX_INCLUDED;

/// What the application reports about the last commit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoundReport {
    /// Height committed.
    pub height: u64,
    /// Updates included.
    pub updates: usize,
    /// Examples behind them.
    pub samples: u64,
    /// Mean of the trainers' last local loss.
    pub mean_train_loss: f32,
    /// Newest test loss and accuracy (of these parameters once their evaluation job is back).
    pub test: Option<(f32, f32)>,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppStats {
    /// Proposals judged.
    pub proposals_judged: u64,
    /// Proposals judged invalid (we prevoted nil).
    pub proposals_refused: u64,
    /// Updates refused (wrong length, harmful, wrong weight).
    pub updates_refused: u64,
    /// Announcements refused for room.
    pub announcements_dropped: u64,
    /// Second announcements by one trainer for one height.
    pub double_announcements: u64,
    /// Times an aggregate was found over the harm budget (a proposer retrying counts again).
    pub aggregates_refused: u64,
    /// Announcements and proposals refused because a trainer is not a member of a closed run.
    pub non_members_refused: u64,
    /// Late announcements taken as a trainer's sign of life.
    pub late_announcements: u64,
    /// Aggregates computed (each list of updates once per height).
    pub aggregates_computed: u64,
}

/// What a judgement of a proposal still waits for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Missing {
    /// Updates we have never seen announced.
    pub announcements: Vec<[u8; 32]>,
    /// Updates whose payload is not here: (id, payload address).
    pub payloads: Vec<([u8; 32], [u8; 32])>,
    /// Whether scores are still being computed.
    pub scoring: bool,
}

impl Missing {
    /// Nothing is missing: the proposal can be judged now.
    pub fn is_empty(&self) -> bool {
        self.announcements.is_empty() && self.payloads.is_empty() && !self.scoring
    }
}

/// The consensus application of a training run.
#[derive(Debug)]
pub struct RoundApp {
    rules: TrainingRules,
    /// How included updates combine (genesis); proposals naming another rule are refused.
    rule: AggregationRule,
    weight: u32,
    /// Committed parameters after `height`.
    params: Arc<Vec<f32>>,
    param_hash: [u8; 32],
    height: u64,
    height_started_ms: u64,
    /// When the last [`LATE_HEIGHTS`] heights were committed here: (height, ms).
    commit_times: VecDeque<(u64, u64)>,
    now_ms: u64,
    pool: Pool,
    scores: HashMap<ScoreKey, Option<f32>>,
    /// This height's draw of validation examples: every score of a height is on it.
    draw: u64,
    /// This validator's secret for its draws ([`crate::jobs::draw_secret`]).
    draw_secret: [u8; 32],
    asked: BTreeSet<ScoreKey>,
    jobs: Vec<Job>,
    results: HashMap<[u8; 32], Arc<Vec<f32>>>,
    /// The result of each list of updates aggregated this height. A held proposal is checked
    /// again at every tick and every finished job until its scores are in, and a proposer
    /// retries as often; a robust rule over dozens of full-size deltas costs more than a tick
    /// on a busy machine, so computing it each time kept validators' event loops busy
    /// (votes handled late, a round took minutes in the 32-peer soak).
    combined: HashMap<(AggregationRule, Vec<[u8; 32]>), [u8; 32]>,
    active_trainers: BTreeMap<Address, u64>,
    credited: BTreeSet<Address>,
    last_report: RoundReport,
    tested_height: u64,
    /// A test evaluation is running (at most one: a slow machine tests the newest height
    /// when it is free instead of queueing one job, with a copy of the parameters, per height).
    testing: bool,
    /// Newest height a test evaluation was asked for.
    test_asked: Option<u64>,
    /// No test evaluations for now (a paused volunteer asked for a quiet machine).
    quiet: bool,
    /// Validation scores are computed (validators). A follower (a trainer, a tab) applies
    /// what more than 2/3 of stake decided, as catch-up does, and spends no compute on
    /// scoring updates it has no vote on.
    scoring: bool,
    /// In a closed run, the trainers whose updates count (the members the data owner
    /// granted); `None`: anyone's (an open run, or a follower that does not judge).
    members: Option<BTreeSet<Address>>,
    /// Members from the next commit on (see [`Self::set_members`]).
    next_members: Option<BTreeSet<Address>>,
    /// The members before the last change, still counted when judging until the commit after
    /// it (see [`Self::set_members`]).
    previous_members: Option<BTreeSet<Address>>,
    stats: AppStats,
}

impl RoundApp {
    /// The application holding `params`, committed at `height`, at time `now_ms`.
    pub fn new(genesis: &Genesis, height: u64, params: Vec<f32>, now_ms: u64) -> Self {
        let rules = genesis.training;
        let mut app = Self {
            rules,
            rule: genesis.aggregation_rule,
            weight: update_weight(&rules),
            param_hash: flat::param_hash(&params).0,
            params: Arc::new(params),
            height,
            height_started_ms: now_ms,
            commit_times: VecDeque::new(),
            now_ms,
            pool: Pool::default(),
            scores: HashMap::new(),
            draw: 0,
            draw_secret: [0; 32],
            asked: BTreeSet::new(),
            jobs: Vec::new(),
            results: HashMap::new(),
            combined: HashMap::new(),
            active_trainers: BTreeMap::new(),
            credited: BTreeSet::new(),
            last_report: RoundReport::default(),
            tested_height: 0,
            testing: false,
            test_asked: None,
            quiet: false,
            scoring: true,
            members: None,
            next_members: None,
            previous_members: None,
            stats: AppStats::default(),
        };
        app.set_committed(height, app.params.clone(), now_ms);
        app
    }

    /// Height of the parameters held.
    pub fn height(&self) -> u64 {
        self.height
    }
    /// The parameters held.
    pub fn params(&self) -> &Arc<Vec<f32>> {
        &self.params
    }
    /// Their hash.
    pub fn param_hash(&self) -> [u8; 32] {
        self.param_hash
    }
    /// The draw of validation examples this height's scores are computed on.
    pub fn draw(&self) -> u64 {
        self.draw
    }
    /// The run's training rules.
    pub fn rules(&self) -> TrainingRules {
        self.rules
    }
    /// About the last commit.
    pub fn last_report(&self) -> RoundReport {
        self.last_report
    }
    /// Counters.
    pub fn stats(&self) -> AppStats {
        self.stats
    }
    /// The update pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Sets the time the next calls see (the peer does before each input).
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Trainers with credit in the committed chain: they get room in the pool first.
    pub fn set_credited(&mut self, credited: impl IntoIterator<Item = Address>) {
        self.credited = credited.into_iter().collect();
    }

    /// Jobs asked for since the last call.
    pub fn take_jobs(&mut self) -> Vec<Job> {
        std::mem::take(&mut self.jobs)
    }

    /// Only these trainers' updates count from now on (a closed run's members), or anyone's.
    /// Updates already pooled from trainers who are no longer members leave the pool: a
    /// proposer that kept a revoked member's update from before a key rotation named it in
    /// every proposal, every validator refused them, and the run stopped.
    ///
    /// A *change* of members (a closed run's new epoch) waits for the next commit: whether a
    /// proposal is valid must not flip while its height is decided. A validator locked on a
    /// value that named a member's update saw that value turn invalid when the member was
    /// revoked mid-height; Tendermint re-proposes a locked value round after round, every
    /// validator refused it, and the run stopped for good.
    ///
    /// The manifest of a new epoch reaches validators at different times, so one applies the
    /// change at a commit and another at the next: for that height they hold different
    /// lists. Around a change a validator therefore proposes by its current list but admits
    /// and judges by the old and new lists together ([`Self::may_count`]), from the change's
    /// arrival until the commit after it is applied. Without that, a validator that applied
    /// the change first refused every proposal of one that had not yet (the revoked member's
    /// update), and with two validators the run stopped.
    pub fn set_members(&mut self, members: Option<BTreeSet<Address>>) {
        if self.members.is_some() && members.is_some() {
            if members != self.members {
                self.next_members = members;
            }
            return;
        }
        self.next_members = None;
        self.apply_members(members);
    }

    fn apply_members(&mut self, members: Option<BTreeSet<Address>>) {
        self.previous_members = std::mem::replace(&mut self.members, members.clone())
            .filter(|old| members.as_ref().is_some_and(|new| new != old));
        let strangers: Vec<[u8; 32]> = self
            .pool
            .iter()
            .filter(|(_, e)| !self.may_count(&e.update.header.trainer))
            .map(|(id, _)| *id)
            .collect();
        for id in strangers {
            self.forget(&id);
        }
        let members = &self.members;
        self.active_trainers
            .retain(|t, _| members.as_ref().is_none_or(|m| m.contains(t)));
    }

    /// Whether `trainer` may submit updates (what a proposer goes by).
    pub fn may_submit(&self, trainer: &Address) -> bool {
        self.members.as_ref().is_none_or(|m| m.contains(trainer))
    }

    /// Whether `trainer`'s update is admitted and counts in others' proposals: a member now,
    /// or, around a change of members, before or after it (see [`Self::set_members`]).
    fn may_count(&self, trainer: &Address) -> bool {
        self.may_submit(trainer)
            || [&self.previous_members, &self.next_members]
                .into_iter()
                .any(|m| m.as_ref().is_some_and(|m| m.contains(trainer)))
    }

    /// Records an announcement (signature already checked) from gossip publisher
    /// `publisher`.
    pub fn announce(&mut self, update: SignedUpdate, publisher: u64) -> Result<Admitted, Refusal> {
        if !self.may_count(&update.header.trainer) {
            // A closed run: nobody waits for, fetches or includes a stranger's update.
            self.stats.non_members_refused += 1;
            return Err(Refusal::NotMember);
        }
        let credited = self.credited.contains(&update.header.trainer);
        let result = self.pool.admit(
            update,
            self.height + 1,
            &self.param_hash,
            self.weight,
            publisher,
            credited,
        );
        match result {
            Ok(Admitted::New) => {
                // Waited for while its payload downloads: a proposer that went ahead as soon
                // as the fast trainers' bytes were in left out every trainer on a slower link
                // (a fresh tab took 100 s to get its first update in).
                self.mark_active(update.header.trainer, update.header.height);
            }
            Ok(Admitted::DoubleAnnouncement) => self.stats.double_announcements += 1,
            Err(Refusal::Full | Refusal::TooManyVariants) => self.stats.announcements_dropped += 1,
            Err(Refusal::WrongWeight) => self.stats.updates_refused += 1,
            _ => {}
        }
        result
    }

    /// The announcement with this id, if known.
    pub fn update(&self, id: &[u8; 32]) -> Option<&SignedUpdate> {
        self.pool.get(id).map(|e| &e.update)
    }

    /// Whether the payload of `id` is here.
    pub fn has_payload(&self, id: &[u8; 32]) -> bool {
        self.pool.get(id).is_some_and(|e| e.delta.is_some())
    }

    /// Attaches a fetched payload and asks for its score.
    pub fn add_payload(&mut self, id: &[u8; 32], delta: Vec<f32>) -> bool {
        let ok = self.pool.add_payload(id, delta, self.params.len());
        if !ok {
            self.stats.updates_refused += 1;
            return false;
        }
        if let Some(e) = self.pool.get(id) {
            self.mark_active(e.update.header.trainer, e.update.header.height);
        }
        self.ask_update_score(id);
        true
    }

    /// A signature-checked announcement for a height already decided: its trainer is alive
    /// but slower than the chain. If it arrived within the run's deadline of its base being
    /// committed here, the trainer could have made that deadline: it counts as active, so
    /// proposers of the next heights wait for it (up to the deadline), and it gets in instead
    /// of finishing a height late forever. A trainer slower than the deadline is not waited
    /// for: it would hold every height to the deadline for nothing. Whether it was news (the
    /// caller forwards only news: one per trainer and height).
    pub fn note_late(&mut self, update: &SignedUpdate) -> bool {
        let h = &update.header;
        if !self.may_submit(&h.trainer) {
            return false;
        }
        let next = self.height + 1;
        if h.height > self.height || h.height + LATE_HEIGHTS <= self.height {
            return false;
        }
        let base_committed = self
            .commit_times
            .iter()
            .find(|(height, _)| *height + 1 == h.height)
            .map(|(_, ms)| *ms);
        if base_committed
            .is_none_or(|ms| self.now_ms.saturating_sub(ms) > self.rules.round_deadline_ms)
        {
            return false;
        }
        if !self.mark_active(h.trainer, next) {
            return false;
        }
        self.stats.late_announcements += 1;
        true
    }

    /// Counts `trainer` active as of `height` (room permitting, see [`MAX_ACTIVE`]); whether
    /// that was news.
    fn mark_active(&mut self, trainer: Address, height: u64) -> bool {
        let known = self.active_trainers.get(&trainer).copied();
        if known.is_some_and(|last| last >= height)
            || (known.is_none() && self.active_trainers.len() >= MAX_ACTIVE)
        {
            return false;
        }
        self.active_trainers.insert(trainer, height);
        true
    }

    /// Forgets an update whose payload came in a form it cannot have (another trainer's, a
    /// format we do not read).
    pub fn refuse(&mut self, id: &[u8; 32]) {
        self.pool.remove(id);
        self.stats.updates_refused += 1;
    }

    /// Forgets an update whose payload could not be fetched.
    pub fn forget(&mut self, id: &[u8; 32]) {
        self.pool.remove(id);
    }

    /// A finished validation job, computed on the examples `draw` picked.
    pub fn on_score(&mut self, key: ScoreKey, draw: u64, loss: Option<f32>) {
        // A score of an earlier height's draw (a job that outlived its height) would compare
        // losses on different examples; an empty height keeps the parameters, and with them
        // the base's key, so the key alone does not tell.
        if draw != self.draw {
            return;
        }
        if !self.asked.remove(&key) {
            return; // for parameters we no longer hold
        }
        if let ScoreKey::Update(id) = key {
            self.pool.set_score(&id, loss.unwrap_or(f32::NAN));
        }
        self.scores.insert(key, loss);
    }

    /// A finished test evaluation. The report keeps the newest one, so a status page shows
    /// the last known figure while the next evaluation runs.
    pub fn on_test(&mut self, height: u64, result: Option<(f32, f32)>) {
        self.testing = false;
        if result.is_some() && height >= self.tested_height {
            self.tested_height = height;
            self.last_report.test = result;
        }
        self.want_test();
    }

    /// Draws validation examples with `secret` from now on (a validator's own: see
    /// [`crate::jobs::validation_draw`]); scores asked for on the old draw are asked again.
    pub fn set_draw_secret(&mut self, secret: [u8; 32]) {
        self.draw_secret = secret;
        self.draw = validation_draw(&secret, &self.param_hash, self.height);
        self.jobs.retain(|j| !matches!(j, Job::Validate { .. }));
        self.asked.clear();
        self.scores.clear();
        self.base_loss();
    }

    /// Scores updates and aggregates (`true`, the default: a validator) or only follows.
    pub fn set_scoring(&mut self, on: bool) {
        self.scoring = on;
        if !on {
            self.jobs.retain(|j| !matches!(j, Job::Validate { .. }));
            self.asked.clear();
        }
    }

    /// Whether test evaluations are stopped (the volunteer paused).
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Stops (`true`) or resumes test evaluations; on resuming, the newest height is tested.
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
        self.want_test();
    }

    /// Asks for a test of the held parameters unless one runs, we are quiet, or this height
    /// was asked for already.
    fn want_test(&mut self) {
        if self.testing || self.quiet || self.test_asked.is_some_and(|h| h >= self.height) {
            return;
        }
        self.testing = true;
        self.test_asked = Some(self.height);
        self.jobs.push(Job::Test {
            height: self.height,
            params: self.params.clone(),
        });
    }

    fn ask(&mut self, key: ScoreKey, params: Arc<Vec<f32>>) {
        // A follower never asks for a score: it has no vote to give.
        if !self.scoring || self.scores.contains_key(&key) || !self.asked.insert(key) {
            return;
        }
        self.jobs.push(Job::Validate {
            key,
            params,
            draw: self.draw,
        });
    }

    fn base_loss(&mut self) -> Option<f32> {
        let key = ScoreKey::Base(self.param_hash);
        match self.scores.get(&key) {
            Some(l) => *l,
            None => {
                self.ask(key, self.params.clone());
                None
            }
        }
    }

    fn ask_update_score(&mut self, id: &[u8; 32]) {
        let key = ScoreKey::Update(*id);
        // Checked before the candidate is built: a follower would copy the parameters for nothing.
        if !self.scoring || self.scores.contains_key(&key) || self.asked.contains(&key) {
            return;
        }
        let Some(delta) = self.pool.get(id).and_then(|e| e.delta.clone()) else {
            return;
        };
        let mut candidate = self.params.to_vec();
        if flat::apply_delta(&mut candidate, &delta, 1.0).is_err() {
            return;
        }
        self.ask(key, Arc::new(candidate));
    }

    /// `Some(pass)` once the update's score is here.
    fn update_passes(&mut self, id: &[u8; 32]) -> Option<bool> {
        let base = self.base_loss();
        let score = self.pool.get(id)?.score;
        let Some(score) = score else {
            self.ask_update_score(id);
            return None;
        };
        let base = base?;
        Some(score.is_finite() && score <= base * HARM_FACTOR + HARM_SLACK)
    }

    /// `Some(pass)` once the aggregate's score is here.
    fn aggregate_passes(&mut self, hash: [u8; 32]) -> Option<bool> {
        let base = self.base_loss();
        let key = ScoreKey::Aggregate(hash);
        let score = match self.scores.get(&key) {
            Some(s) => *s,
            None => {
                let params = self.results.get(&hash)?.clone();
                self.ask(key, params);
                return None;
            }
        };
        let base = base?;
        Some(score.is_some_and(|s| s <= base * (1.0 + AGGREGATE_FACTOR) + AGGREGATE_SLACK))
    }

    /// What judging `proposal` still needs; asks for any score it lacks.
    pub fn missing_for(&mut self, proposal: &RoundProposal) -> Missing {
        let mut missing = Missing::default();
        for u in &proposal.updates {
            match self.pool.get(&u.id) {
                None => missing.announcements.push(u.id),
                Some(e) if e.delta.is_none() => {
                    missing.payloads.push((u.id, e.update.header.payload_hash));
                }
                Some(_) => {
                    if self.scoring && self.update_passes(&u.id).is_none() {
                        missing.scoring = true;
                    }
                }
            }
        }
        if missing.is_empty()
            && self.scoring
            && proposal.base_param_hash == self.param_hash
            && let Some((_, hash)) = self.aggregate(&proposal.updates)
            && self.aggregate_passes(hash).is_none()
        {
            missing.scoring = true;
        }
        missing
    }

    /// The parameters after the genesis rule's aggregate of the listed updates (all must be
    /// fetched).
    fn aggregate(&mut self, updates: &[IncludedUpdate]) -> Option<(Arc<Vec<f32>>, [u8; 32])> {
        if updates.is_empty() {
            return Some((self.params.clone(), self.param_hash));
        }
        // An id names its payload's hash, so the same list always combines the same deltas.
        let key = (self.rule, updates.iter().map(|u| u.id).collect());
        if let Some(hash) = self.combined.get(&key)
            && let Some(params) = self.results.get(hash)
        {
            return Some((params.clone(), *hash));
        }
        let mut deltas = Vec::with_capacity(updates.len());
        for u in updates {
            deltas.push(self.pool.get(&u.id)?.delta.clone()?);
        }
        let slices: Vec<&[f32]> = deltas.iter().map(|d| d.as_slice()).collect();
        let combined = combine(self.rule, &slices, self.weight)?;
        let mut next = self.params.to_vec();
        flat::apply_delta(&mut next, &combined, 1.0).ok()?;
        let hash = flat::param_hash(&next).0;
        self.stats.aggregates_computed += 1;
        self.combined.insert(key, hash);
        let next = self
            .results
            .entry(hash)
            .or_insert_with(|| Arc::new(next))
            .clone();
        Some((next, hash))
    }

    /// Applies a committed block. `false` means the payloads are missing and the parameters
    /// must come from a peer's checkpoint instead.
    pub fn on_commit(&mut self, block: &Block) -> bool {
        let proposal = &block.value.proposal;
        let target = proposal.result_param_hash;
        let next = match self.results.get(&target) {
            Some(p) => Some(p.clone()),
            None if proposal.base_param_hash == self.param_hash => {
                self.aggregate(&proposal.updates).map(|(p, _)| p)
            }
            None => None,
        };
        let Some(next) = next.filter(|p| flat::param_hash(p).0 == target) else {
            return false;
        };
        let mut loss = 0f64;
        for u in &proposal.updates {
            if let Some(e) = self.pool.get(&u.id) {
                loss += f64::from(e.update.header.loss_after);
            }
        }
        let n = proposal.updates.len();
        let height = block.height.0;
        self.set_committed(height, next, self.now_ms);
        self.last_report = RoundReport {
            height,
            updates: n,
            samples: n as u64 * u64::from(self.weight),
            mean_train_loss: if n == 0 {
                f32::NAN
            } else {
                (loss / n as f64) as f32
            },
            test: self.last_report.test,
        };
        true
    }

    /// Adopts parameters committed at `height` (from a block or a verified checkpoint).
    pub fn set_committed(&mut self, height: u64, params: Arc<Vec<f32>>, now_ms: u64) {
        self.param_hash = flat::param_hash(&params).0;
        self.draw = validation_draw(&self.draw_secret, &self.param_hash, height);
        self.params = params;
        self.height = height;
        self.height_started_ms = now_ms;
        self.commit_times.push_back((height, now_ms));
        while self.commit_times.len() > LATE_HEIGHTS as usize {
            self.commit_times.pop_front();
        }
        self.results.clear();
        self.combined.clear();
        self.scores.clear();
        self.asked.clear();
        self.pool.retain_after(height);
        // A change applied at the previous commit has had its height of grace.
        self.previous_members = None;
        if let Some(members) = self.next_members.take() {
            self.apply_members(Some(members));
        }
        self.active_trainers
            .retain(|_, last| *last + ACTIVE_HEIGHTS > height);
        self.last_report = RoundReport {
            height,
            test: self.last_report.test,
            ..RoundReport::default()
        };
        self.want_test();
        // The base every update of the next height is judged against: score it now, while
        // trainers train.
        self.base_loss();
    }

    /// Updates a proposal made in `round` must include: the run's minimum in the first
    /// rounds, none from [`EMPTY_FROM_ROUND`] on. A height whose updates all went missing
    /// (announced while the trainers' links were down) or failed the harm budget would
    /// otherwise never commit, since trainers train once per height; an empty block keeps the
    /// parameters and moves every trainer on to the next height.
    fn min_updates(&self, round: Round) -> usize {
        if round.as_i64() >= EMPTY_FROM_ROUND {
            0
        } else {
            self.rules.min_updates as usize
        }
    }

    /// Whether another trainer's payload with the same delta for the same height arrived here
    /// first: credit for someone else's work. Payloads name their trainer
    /// ([`crate::payload`]), so a copier must fetch the original before re-wrapping it, and
    /// the original is here first. Validators refuse any proposal naming one delta twice.
    fn is_copy(&self, entry: &Entry) -> bool {
        let h = &entry.update.header;
        self.pool.iter().any(|(_, o)| {
            o.delta.is_some()
                && o.delta_hash == entry.delta_hash
                && o.arrived < entry.arrived
                && o.update.header.height == h.height
                && o.update.header.trainer != h.trainer
        })
    }

    fn deadline_passed(&self) -> bool {
        self.now_ms.saturating_sub(self.height_started_ms) >= self.rules.round_deadline_ms
    }

    fn judge(&mut self, height: Height, round: Round, proposal: &RoundProposal) -> bool {
        if height.0 != self.height + 1 || proposal.base_param_hash != self.param_hash {
            return refused("another height or base");
        }
        // The rule is the run's, not the proposer's choice: a proposer free to pick the mean
        // would undo a robust genesis.
        if proposal.aggregation_rule != self.rule {
            return refused("another aggregation rule");
        }
        if proposal.updates.len() < self.min_updates(round) {
            return refused("too few updates");
        }
        if proposal.updates.is_empty() {
            // Nothing applied, nothing to judge: the parameters stay as they are.
            return proposal.result_param_hash == self.param_hash;
        }
        for u in &proposal.updates {
            let Some(entry) = self.pool.get(&u.id) else {
                return refused("an update we do not have");
            };
            if entry.update.header.trainer.0 != u.trainer || entry.update.header.height != height.0
            {
                return refused("an update of another trainer or height");
            }
            if self.scoring && !self.may_count(&Address(u.trainer)) {
                self.stats.non_members_refused += 1;
                return refused("an update by a non-member");
            }
            if self.scoring && self.update_passes(&u.id) != Some(true) {
                return refused("an update that fails (or lacks) its score");
            }
        }
        // One delta counts once, whoever names it (see `RoundApp::is_copy`).
        let mut deltas = BTreeSet::new();
        if !proposal.updates.iter().all(|u| {
            self.pool
                .get(&u.id)
                .is_some_and(|e| deltas.insert(e.delta_hash))
        }) {
            return refused("one delta named twice");
        }
        let Some((_, hash)) = self.aggregate(&proposal.updates) else {
            return refused("updates that do not aggregate");
        };
        if hash != proposal.result_param_hash {
            return refused("a result that does not recompute");
        }
        if !self.scoring {
            return true;
        }
        let ok = self.aggregate_passes(hash) == Some(true);
        if !ok {
            self.stats.aggregates_refused += 1;
            return refused("an aggregate over the harm budget (or unscored)");
        }
        ok
    }
}

/// Logs why a proposal was refused (operators see it at debug level) and says no.
fn refused(reason: &'static str) -> bool {
    tracing::debug!(reason, "proposal refused");
    false
}

/// The aggregate delta of `deltas` under `rule` (`tabswarm_core::robust`), each update of
/// `weight` examples; `None` when the inputs are refused (no updates, ragged lengths).
pub fn combine(rule: AggregationRule, deltas: &[&[f32]], weight: u32) -> Option<Vec<f32>> {
    match rule {
        AggregationRule::Mean => {
            // Equal weights: the rules give every update the same number of examples.
            let weights = vec![f64::from(weight); deltas.len()];
            flat::weighted_mean(deltas, &weights).ok()
        }
        AggregationRule::Median => robust::coordinate_median(deltas).ok(),
        AggregationRule::TrimmedMean { trim_per_mille } => {
            robust::trimmed_mean(deltas, robust::trim_count(deltas.len(), trim_per_mille)).ok()
        }
        AggregationRule::CenteredClip { iterations } => {
            robust::centered_clip(deltas, u32::from(iterations)).ok()
        }
    }
}

impl Application for RoundApp {
    fn propose(&mut self, height: Height, round: Round, base: [u8; 32]) -> Option<RoundProposal> {
        if height.0 != self.height + 1 || base != self.param_hash {
            return None;
        }
        self.base_loss()?;
        let ready: Vec<[u8; 32]> = self
            .pool
            .iter()
            .filter(|(_, e)| {
                e.delta.is_some()
                    && e.update.header.height == height.0
                    && self.may_submit(&e.update.header.trainer)
                    && !self
                        .pool
                        .double_announced(&e.update.header.trainer, e.update.header.height)
                    && !self.is_copy(e)
            })
            .map(|(id, _)| *id)
            .collect();
        let mut passing: Vec<(bool, f32, [u8; 32])> = Vec::new();
        let mut unscored = false;
        for id in ready {
            match self.update_passes(&id) {
                Some(true) => {
                    let e = self.pool.get(&id)?;
                    passing.push((!e.credited, e.score.unwrap_or(f32::INFINITY), id));
                }
                Some(false) => {
                    self.pool.remove(&id);
                    self.stats.updates_refused += 1;
                }
                None => unscored = true,
            }
        }
        let deadline = self.deadline_passed();
        if unscored && !deadline {
            return None;
        }
        // Credited trainers first, then the best scores.
        passing.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        passing.truncate(MAX_INCLUDED);
        let min = self.min_updates(round);
        let expected = self.active_trainers.len().min(MAX_INCLUDED).max(min);
        if passing.len() < min || (passing.len() < expected && !deadline) {
            return None;
        }
        // The aggregate must stay within the harm budget: drop the worst until it does.
        while passing.len() >= min.max(1) {
            let mut updates: Vec<IncludedUpdate> = passing
                .iter()
                .filter_map(|(_, _, id)| self.pool.get(id).map(|e| e.update.included()))
                .collect();
            updates.sort();
            let (_, result) = self.aggregate(&updates)?;
            match self.aggregate_passes(result)? {
                true => {
                    tracing::debug!(
                        height = height.0,
                        round = round.as_i64(),
                        included = updates.len(),
                        expected,
                        waited_ms = self.now_ms.saturating_sub(self.height_started_ms),
                        "proposing"
                    );
                    return Some(RoundProposal {
                        base_param_hash: base,
                        updates,
                        aggregation_rule: self.rule,
                        result_param_hash: result,
                    });
                }
                false => {
                    self.stats.aggregates_refused += 1;
                    let worst = passing
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.1.total_cmp(&b.1.1))
                        .map(|(i, _)| i)?;
                    passing.remove(worst);
                }
            }
        }
        // Nothing fits: from EMPTY_FROM_ROUND on, an empty block rather than no block.
        (min == 0).then_some(RoundProposal {
            base_param_hash: base,
            updates: Vec::new(),
            aggregation_rule: self.rule,
            result_param_hash: base,
        })
    }

    fn validate(&mut self, height: Height, round: Round, proposal: &RoundProposal) -> bool {
        self.stats.proposals_judged += 1;
        let ok = self.judge(height, round, proposal);
        if !ok {
            self.stats.proposals_refused += 1;
        }
        ok
    }
}

/// First bytes of an id, for logs.
pub fn short(id: &[u8; 32]) -> String {
    tabswarm_consensus::genesis::hex(&id[..4])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tabswarm_consensus::genesis::{GenesisFile, ValidatorEntry, hex};
    use tabswarm_consensus::identity::Keypair;
    use tabswarm_consensus::update::UpdateHeader;

    const N: usize = 8;

    fn genesis() -> Genesis {
        genesis_with(AggregationRule::Mean)
    }

    fn genesis_with(rule: AggregationRule) -> Genesis {
        let params = vec![0.5f32; N];
        Genesis::from_file(GenesisFile {
            data: None,
            compression: Default::default(),
            version: 1,
            name: "round-tests".into(),
            initial_param_hash: hex(&flat::param_hash(&params).0),
            aggregation_rule: rule,
            timeouts_ms: Default::default(),
            training: TrainingRules {
                min_updates: 1,
                round_deadline_ms: 1_000,
                ..TrainingRules::default()
            },
            validators: vec![ValidatorEntry {
                public_key: hex(&Keypair::from_seed([1; 32]).address().0),
                stake: 1,
            }],
        })
        .unwrap()
    }

    /// An app at height 0 holding `[0.5; N]`, with the base scored at `base_loss`.
    fn app(base_loss: f32) -> RoundApp {
        app_with(AggregationRule::Mean, base_loss)
    }

    fn app_with(rule: AggregationRule, base_loss: f32) -> RoundApp {
        let g = genesis_with(rule);
        let mut app = RoundApp::new(&g, 0, vec![0.5; N], 0);
        let key = ScoreKey::Base(app.param_hash());
        app.on_score(key, app.draw(), Some(base_loss));
        app
    }

    /// An update by trainer `seed` for `height`, signed.
    fn signed(app: &RoundApp, seed: u8, height: u64) -> SignedUpdate {
        let key = Keypair::from_seed([seed; 32]);
        let run = genesis().run_id();
        SignedUpdate::sign(
            UpdateHeader {
                height,
                base_param_hash: app.param_hash(),
                trainer: key.address(),
                samples: update_weight(&app.rules()),
                loss_before: 1.0,
                loss_after: 0.5,
                payload_hash: [seed; 32],
                payload_len: (N * 4) as u32,
            },
            &key,
            &run,
        )
    }

    /// A signed update by trainer `seed` with payload `delta`, for the next height, admitted
    /// and fetched.
    fn add(app: &mut RoundApp, seed: u8, delta: f32) -> IncludedUpdate {
        let u = signed(app, seed, app.height() + 1);
        app.announce(u, 1).unwrap();
        assert!(app.add_payload(&u.id(), vec![delta; N]));
        u.included()
    }

    /// Answers every validation job the app asked for with `loss(key)`.
    fn score_all(app: &mut RoundApp, loss: impl Fn(&ScoreKey) -> f32) -> usize {
        let jobs = app.take_jobs();
        let mut n = 0;
        for job in jobs {
            if let Job::Validate { key, draw, .. } = job {
                app.on_score(key, draw, Some(loss(&key)));
                n += 1;
            }
        }
        n
    }

    fn proposal(app: &mut RoundApp, updates: &[IncludedUpdate]) -> RoundProposal {
        let mut updates = updates.to_vec();
        updates.sort();
        let (_, hash) = app.aggregate(&updates).unwrap();
        RoundProposal {
            base_param_hash: app.param_hash(),
            updates,
            aggregation_rule: app.rule,
            result_param_hash: hash,
        }
    }

    /// Scores every update and aggregate `p` needs (all fine), then judges it.
    fn judge(app: &mut RoundApp, p: &RoundProposal) -> bool {
        for _ in 0..4 {
            if app.missing_for(p).is_empty() {
                break;
            }
            score_all(app, |_| 0.9);
        }
        app.validate(Height(1), Round::new(0), p)
    }

    #[test]
    fn a_proposal_naming_another_aggregation_rule_than_the_runs_is_refused() {
        let mut app = app_with(AggregationRule::Median, 1.0);
        // Distinct deltas: one delta named twice is refused as a copy (`is_copy`).
        let ups = [
            add(&mut app, 2, 0.1),
            add(&mut app, 3, 0.12),
            add(&mut app, 4, 5.0),
        ];
        let honest = proposal(&mut app, &ups);
        assert!(judge(&mut app, &honest));
        // The mean of the same updates, named as such: what a proposer steering the run
        // towards the outlier would send.
        app.rule = AggregationRule::Mean;
        let mean = proposal(&mut app, &ups);
        app.rule = AggregationRule::Median;
        assert_ne!(mean.result_param_hash, honest.result_param_hash);
        assert!(!judge(&mut app, &mean));
        // The median's result under the wrong name is refused too.
        let renamed = RoundProposal {
            aggregation_rule: AggregationRule::Mean,
            ..honest
        };
        assert!(!judge(&mut app, &renamed));
    }

    #[test]
    fn in_a_closed_run_a_strangers_update_is_neither_admitted_nor_accepted_in_a_proposal() {
        let member = Keypair::from_seed([2; 32]).address();
        // Admitted while the run is open, so a hostile proposer can name it.
        let mut app = app_with(AggregationRule::Mean, 1.0);
        let ups = [add(&mut app, 2, 0.1), add(&mut app, 3, 0.12)];
        let both = proposal(&mut app, &ups);
        let only_member = proposal(&mut app, &ups[..1]);
        app.set_members(Some([member].into()));
        assert!(
            !judge(&mut app, &both),
            "a proposal naming a stranger is refused"
        );
        assert!(
            judge(&mut app, &only_member),
            "the member's update alone is fine"
        );
        // Pooled before the run closed to it: gone from the pool once the members are known
        // (a proposer would otherwise name it in every proposal).
        let stranger_before = ups[1].id;
        assert!(app.update(&stranger_before).is_none());
        // A stranger's announcement never enters the pool, a member's does.
        let stranger = signed(&app, 9, app.height() + 1);
        assert_eq!(app.announce(stranger, 1), Err(Refusal::NotMember));
        assert!(app.stats().non_members_refused >= 1);
        assert!(app.update(&stranger.id()).is_none());
        assert_eq!(
            app.announce(signed(&app, 2, app.height() + 1), 1),
            Err(Refusal::Duplicate),
            "a member's announcement goes on to the pool's own checks"
        );
        // A peer that does not know the members (a follower) does not filter by them.
        app.set_members(None);
        assert!(app.announce(signed(&app, 9, app.height() + 1), 1).is_ok());
    }

    #[test]
    fn a_change_of_members_waits_for_the_commit_so_a_proposal_stays_valid_all_its_height() {
        let (a, b) = (
            Keypair::from_seed([2; 32]).address(),
            Keypair::from_seed([3; 32]).address(),
        );
        let mut app = app_with(AggregationRule::Mean, 1.0);
        app.set_members(Some([a, b].into()));
        let ups = [add(&mut app, 2, 0.1), add(&mut app, 3, 0.12)];
        let both = proposal(&mut app, &ups);
        assert!(judge(&mut app, &both));
        // A new epoch revokes b mid-height: a value others may be locked on stays valid.
        app.set_members(Some([a].into()));
        assert!(
            judge(&mut app, &both),
            "a proposal valid earlier in the height turned invalid"
        );
        assert!(app.update(&ups[1].id).is_some());
        // From the next height on, b is out of our proposals; a height later (its grace for
        // validators that learnt of the change a commit later) refused outright.
        let params = app.params().clone();
        app.set_committed(app.height() + 1, params.clone(), 0);
        assert!(!app.may_submit(&b));
        app.set_committed(app.height() + 1, params, 0);
        let late = signed(&app, 3, app.height() + 1);
        assert_eq!(app.announce(late, 1), Err(Refusal::NotMember));
    }

    #[test]
    fn validators_that_apply_a_change_of_members_a_height_apart_accept_each_others_proposals() {
        let (a, b) = (
            Keypair::from_seed([2; 32]).address(),
            Keypair::from_seed([3; 32]).address(),
        );
        // Both start with {a, b}. The new epoch ({a}) reaches `early` before the commit of
        // height 1 and `late` after it.
        let (mut early, mut late) = (
            app_with(AggregationRule::Mean, 1.0),
            app_with(AggregationRule::Mean, 1.0),
        );
        for app in [&mut early, &mut late] {
            app.set_members(Some([a, b].into()));
        }
        early.set_members(Some([a].into()));
        for app in [&mut early, &mut late] {
            let params = app.params().clone();
            app.set_committed(1, params, 0);
            app.on_score(ScoreKey::Base(app.param_hash()), app.draw(), Some(1.0));
        }
        late.set_members(Some([a].into()));
        assert!(!early.may_submit(&b) && late.may_submit(&b));
        // Height 2: `late` still goes by {a, b}; `early` admits and judges b's update too.
        let ups = [signed(&late, 2, 2), signed(&late, 3, 2)];
        for (u, d) in ups.iter().zip([0.1, 0.12]) {
            for app in [&mut early, &mut late] {
                assert!(app.announce(*u, 1).is_ok(), "refused around the change");
                assert!(app.add_payload(&u.id(), vec![d; N]));
            }
        }
        let included: Vec<IncludedUpdate> = ups.iter().map(SignedUpdate::included).collect();
        let by_late = proposal(&mut late, &included);
        for _ in 0..4 {
            if early.missing_for(&by_late).is_empty() {
                break;
            }
            score_all(&mut early, |_| 0.9);
        }
        assert!(
            early.validate(Height(2), Round::new(0), &by_late),
            "the validator that applied the change first refused the other's proposal"
        );
        // It does not propose b's update itself.
        early.set_now(10_000);
        let mine = try_propose(&mut early).expect("a proposal");
        assert!(!mine.updates.is_empty());
        assert!(mine.updates.iter().all(|u| u.trainer != b.0));
        // From height 3 on both go by {a} alone.
        for app in [&mut early, &mut late] {
            let params = app.params().clone();
            app.set_committed(2, params, 0);
        }
        for app in [&mut early, &mut late] {
            let params = app.params().clone();
            app.set_committed(3, params, 0);
            let stranger = signed(app, 3, 4);
            assert_eq!(app.announce(stranger, 1), Err(Refusal::NotMember));
        }
    }

    #[test]
    fn under_a_robust_rule_a_hostile_minority_does_not_move_the_committed_model() {
        for rule in [
            AggregationRule::Median,
            AggregationRule::TrimmedMean {
                trim_per_mille: 250,
            },
            AggregationRule::CenteredClip { iterations: 3 },
        ] {
            let mut app = app_with(rule, 1.0);
            let ups = [
                add(&mut app, 2, 0.1),
                add(&mut app, 3, 0.11),
                add(&mut app, 4, 0.09),
                add(&mut app, 5, -1000.0), // sign flipped and scaled
            ];
            let p = proposal(&mut app, &ups);
            assert_eq!(p.aggregation_rule, rule);
            assert!(app.on_commit(&block_of(p)), "{rule:?}");
            // 0.5 + 0.1 whatever the fourth update says (centered clipping moves a little).
            assert!(
                app.params().iter().all(|x| (x - 0.6).abs() < 0.05),
                "{rule:?}: {:?}",
                app.params()
            );
        }
    }

    /// A committed block holding `proposal` at height 1.
    fn block_of(proposal: RoundProposal) -> Block {
        Block {
            height: Height(1),
            parent: [0; 32],
            value: tabswarm_consensus::context::Value {
                proposal,
                evidence: vec![],
            },
            certificate: tabswarm_consensus::ledger::CommitCert {
                height: Height(1),
                round: Round::new(0),
                value_id: tabswarm_consensus::context::ValueId([0; 32]),
                signatures: vec![],
            },
            credits: vec![],
        }
    }

    #[test]
    fn an_aggregate_over_the_harm_budget_is_refused_even_if_each_update_passes() {
        let mut app = app(1.0);
        let honest = add(&mut app, 2, 0.01);
        let harmful = add(&mut app, 3, -0.3);
        // Each update alone: the harmful one stays just under the per-update line (2.0).
        score_all(&mut app, |k| match k {
            ScoreKey::Update(id) if *id == harmful.id => 1.95,
            _ => 0.9,
        });
        let p = proposal(&mut app, &[honest, harmful]);
        let missing = app.missing_for(&p);
        assert!(
            missing.scoring,
            "the aggregate must be scored before judging"
        );
        // Their mean raises the loss to 1.2: more than 1.0 * 1.05 + 0.02.
        score_all(&mut app, |_| 1.2);
        assert!(app.missing_for(&p).is_empty());
        assert!(
            !app.validate(Height(1), Round::new(0), &p),
            "judged only per update, this passed"
        );
        assert_eq!(app.stats().aggregates_refused, 1);
        // The honest update alone is fine.
        let alone = proposal(&mut app, &[honest]);
        app.missing_for(&alone);
        score_all(&mut app, |_| 0.95);
        assert!(app.validate(Height(1), Round::new(0), &alone));
    }

    #[test]
    fn a_proposer_drops_its_worst_update_until_the_aggregate_fits_the_budget() {
        let mut app = app(1.0);
        app.set_now(5_000); // past the round deadline: propose what is here
        let honest = add(&mut app, 2, 0.01);
        let harmful = add(&mut app, 3, -0.3);
        let both = proposal(&mut app, &[honest, harmful]).result_param_hash;
        let score = move |k: &ScoreKey| match k {
            ScoreKey::Update(id) if *id == harmful.id => 1.95,
            ScoreKey::Aggregate(h) if *h == both => 1.2,
            _ => 0.9,
        };
        let mut proposed = None;
        for _ in 0..6 {
            proposed = app.propose(Height(1), Round::new(0), app.param_hash());
            if proposed.is_some() {
                break;
            }
            assert!(
                score_all(&mut app, score) > 0,
                "waiting without asking for a score"
            );
        }
        let p = proposed.expect("a proposal once scores are in");
        assert_eq!(p.updates, vec![honest]);
        assert!(app.stats().aggregates_refused >= 1);
    }

    #[test]
    fn when_no_update_fits_an_empty_block_is_proposed_and_accepted_from_round_two() {
        let mut app = app(1.0);
        app.set_now(5_000);
        // Passes the per-update line alone, but no aggregate with it fits the budget.
        let harmful = add(&mut app, 3, -0.3);
        let base = app.param_hash();
        let score = move |k: &ScoreKey| match k {
            ScoreKey::Update(id) if *id == harmful.id => 1.95,
            ScoreKey::Aggregate(h) if *h != base => 1.5,
            _ => 0.9,
        };
        let propose = |app: &mut RoundApp, round: i64| {
            (0..6).find_map(|_| {
                let p = app.propose(Height(1), Round::new(round as u32), base);
                score_all(app, score);
                p
            })
        };
        for round in 0..EMPTY_FROM_ROUND {
            assert_eq!(propose(&mut app, round), None, "round {round}");
        }
        let empty = propose(&mut app, EMPTY_FROM_ROUND)
            .expect("an empty block once the first rounds failed");
        assert!(empty.updates.is_empty());
        assert_eq!(empty.result_param_hash, base);
        assert!(!app.validate(Height(1), Round::new(0), &empty));
        assert!(app.validate(Height(1), Round::new(EMPTY_FROM_ROUND as u32), &empty));
        let moved = RoundProposal {
            result_param_hash: [9; 32],
            ..empty.clone()
        };
        assert!(!app.validate(Height(1), Round::new(EMPTY_FROM_ROUND as u32), &moved));
    }

    #[test]
    fn updates_weigh_the_same_whatever_they_claim_and_commits_apply_the_mean() {
        let mut app = app(1.0);
        let a = add(&mut app, 2, 0.2);
        let b = add(&mut app, 3, 0.4);
        let p = proposal(&mut app, &[a, b]);
        let block = block_of(p.clone());
        assert!(app.on_commit(&block));
        assert_eq!(app.height(), 1);
        assert_eq!(app.param_hash(), p.result_param_hash);
        // Equal weights: 0.5 + (0.2 + 0.4) / 2.
        assert!(app.params().iter().all(|x| (x - 0.8).abs() < 1e-6));
        // A block whose result we cannot reproduce is not applied (a checkpoint is needed).
        let mut other = block.clone();
        other.height = Height(2);
        other.value.proposal.base_param_hash = [9; 32];
        other.value.proposal.result_param_hash = [9; 32];
        assert!(!app.on_commit(&other));
        assert_eq!(app.height(), 1);
    }

    fn tests_asked(app: &mut RoundApp) -> Vec<u64> {
        app.take_jobs()
            .into_iter()
            .filter_map(|j| match j {
                Job::Test { height, .. } => Some(height),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_slow_tester_runs_one_test_at_a_time_for_the_newest_height() {
        let mut app = app(1.0);
        assert_eq!(
            tests_asked(&mut app),
            vec![0],
            "the held parameters are tested at start"
        );
        // Heights commit faster than tests finish: nothing queues behind the running test.
        for h in 1..=5 {
            app.set_committed(h, Arc::new(vec![0.5 + h as f32; N]), h * 100);
        }
        assert_eq!(tests_asked(&mut app), Vec::<u64>::new());
        app.on_test(0, Some((2.3, 0.1)));
        assert_eq!(
            tests_asked(&mut app),
            vec![5],
            "the newest height, skipping 1 to 4"
        );
        app.on_test(5, Some((0.5, 0.9)));
        assert_eq!(
            tests_asked(&mut app),
            Vec::<u64>::new(),
            "height 5 is tested already"
        );
        assert_eq!(app.last_report().test, Some((0.5, 0.9)));
    }

    #[test]
    fn a_quiet_app_asks_for_no_test_until_it_resumes() {
        let mut app = app(1.0);
        app.on_test(0, None); // a failed test still frees the slot
        let _ = tests_asked(&mut app);
        app.set_quiet(true);
        app.set_committed(1, Arc::new(vec![1.0; N]), 100);
        app.set_committed(2, Arc::new(vec![2.0; N]), 200);
        assert_eq!(tests_asked(&mut app), Vec::<u64>::new());
        app.set_quiet(false);
        assert_eq!(tests_asked(&mut app), vec![2]);
    }

    /// The key and draw of the validation jobs asked for since the last call.
    fn validations(app: &mut RoundApp) -> Vec<(ScoreKey, u64)> {
        app.take_jobs()
            .into_iter()
            .filter_map(|j| match j {
                Job::Validate { key, draw, .. } => Some((key, draw)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_height_scores_on_a_new_secret_draw_and_a_score_of_an_old_draw_is_ignored() {
        let g = genesis();
        let mut app = RoundApp::new(&g, 0, vec![0.5; N], 0);
        let public = app.draw();
        app.set_draw_secret(crate::jobs::draw_secret(&[1; 32]));
        assert_ne!(
            app.draw(),
            public,
            "a validator draws what anyone can compute"
        );
        let first = validations(&mut app);
        assert_eq!(first.len(), 1, "the base is scored once: {first:?}");
        assert_eq!(first[0].1, app.draw());
        // An empty height keeps the parameters, so the base has the same key; not the draw.
        app.set_committed(1, Arc::new(vec![0.5; N]), 100);
        let second = validations(&mut app);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].0, first[0].0);
        assert_ne!(second[0].1, first[0].1, "two heights scored on one draw");
        // The first height's job finishes late: its loss is on other examples.
        app.on_score(first[0].0, first[0].1, Some(9.0));
        assert_eq!(app.base_loss(), None, "a score of the old draw was taken");
        app.on_score(second[0].0, second[0].1, Some(1.0));
        assert_eq!(app.base_loss(), Some(1.0));
    }

    fn validate_jobs(app: &mut RoundApp) -> usize {
        app.take_jobs()
            .iter()
            .filter(|j| matches!(j, Job::Validate { .. }))
            .count()
    }

    #[test]
    fn a_follower_scores_nothing_and_accepts_only_what_it_recomputes() {
        let g = genesis();
        let mut app = RoundApp::new(&g, 0, vec![0.5; N], 0);
        app.set_scoring(false);
        assert_eq!(validate_jobs(&mut app), 0, "a follower scored the base");
        // Even an update that would fail the harm budget: scoring is the validators' job.
        let u = add(&mut app, 2, -0.3);
        assert_eq!(validate_jobs(&mut app), 0, "a follower scored an update");
        let p = proposal(&mut app, &[u]);
        assert!(
            app.missing_for(&p).is_empty(),
            "a follower waits for scores"
        );
        assert!(app.validate(Height(1), Round::new(0), &p));
        assert_eq!(validate_jobs(&mut app), 0);
        // What it can check without scores, it still checks: the result must be the mean.
        let mut wrong = p.clone();
        wrong.result_param_hash = [9; 32];
        assert!(!app.validate(Height(1), Round::new(0), &wrong));
        // A validator of the same state waits for scores.
        let mut validator = RoundApp::new(&g, 0, vec![0.5; N], 0);
        let u = add(&mut validator, 2, -0.3);
        let p = proposal(&mut validator, &[u]);
        assert!(!validator.missing_for(&p).is_empty());
        assert!(validate_jobs(&mut validator) >= 2);
    }

    /// Proposes at height 1 on what is here, answering scores with `loss`; `None` if the
    /// proposer still waits.
    fn try_propose(app: &mut RoundApp) -> Option<RoundProposal> {
        let next = Height(app.height() + 1);
        (0..6).find_map(|_| {
            let p = app.propose(next, Round::new(0), app.param_hash());
            score_all(app, |_| 0.9);
            p
        })
    }

    /// The app moved on to height 1 at 300 ms: a trainer that trained on height 0 is late.
    fn moved_on() -> RoundApp {
        let mut app = app(1.0);
        app.set_committed(1, Arc::new(vec![0.6; N]), 300);
        let key = ScoreKey::Base(app.param_hash());
        app.on_score(key, app.draw(), Some(1.0));
        app
    }

    #[test]
    fn a_late_trainer_that_could_make_the_deadline_is_waited_for() {
        let mut app = moved_on();
        app.set_now(900); // 900 ms after its base (height 0) was committed: within 1 s
        let late = signed(&app, 7, 1);
        assert!(app.note_late(&late));
        assert!(!app.note_late(&late), "the same trainer twice is no news");
        add(&mut app, 2, 0.01);
        assert_eq!(
            try_propose(&mut app),
            None,
            "proposed without waiting for the late trainer"
        );
        app.set_now(300 + 1_000);
        let p = try_propose(&mut app).expect("a proposal at the deadline");
        assert_eq!(p.updates.len(), 1);
        assert_eq!(app.stats().late_announcements, 1);
    }

    #[test]
    fn a_trainer_slower_than_the_deadline_or_long_gone_is_not_waited_for() {
        let mut app = moved_on();
        // 1.2 s after its base: it would hold every height to the deadline for nothing.
        app.set_now(1_200);
        assert!(!app.note_late(&signed(&app, 7, 1)));
        // Older than any height this app remembers.
        for h in 2..=LATE_HEIGHTS + 1 {
            app.set_committed(h, Arc::new(vec![h as f32; N]), 1_200);
        }
        assert!(!app.note_late(&signed(&app, 8, 1)));
        // Not late at all: for the next height, that is an announcement.
        assert!(!app.note_late(&signed(&app, 9, app.height() + 1)));
        let key = ScoreKey::Base(app.param_hash());
        app.on_score(key, app.draw(), Some(1.0));
        add(&mut app, 2, 0.01);
        assert!(try_propose(&mut app).is_some(), "waited for nobody");
    }

    #[test]
    fn a_flood_of_late_announcements_under_fresh_keys_delays_a_height_by_the_deadline_at_most() {
        let mut app = moved_on();
        app.set_now(400);
        let noted = (0..=255u8)
            .filter(|&seed| app.note_late(&signed(&app, seed, 1)))
            .count();
        assert_eq!(noted, MAX_ACTIVE, "active trainers are bounded");
        add(&mut app, 2, 0.01);
        assert_eq!(try_propose(&mut app), None);
        app.set_now(300 + 1_000);
        assert!(
            try_propose(&mut app).is_some(),
            "the flood held the height past the deadline"
        );
    }

    #[test]
    fn a_copied_delta_counts_once_for_the_trainer_whose_payload_came_first() {
        let mut app = app(1.0);
        app.set_now(5_000);
        let original = add(&mut app, 2, 0.01);
        let copy = add(&mut app, 3, 0.01);
        let p = try_propose(&mut app).expect("a proposal");
        assert_eq!(p.updates, vec![original], "the copier was credited");
        let both = proposal(&mut app, &[original, copy]);
        app.missing_for(&both);
        score_all(&mut app, |_| 0.9);
        assert!(app.missing_for(&both).is_empty());
        assert!(
            !app.validate(Height(1), Round::new(0), &both),
            "one delta counted twice"
        );
    }

    #[test]
    fn a_trainer_whose_payload_is_still_downloading_is_waited_for_until_the_deadline() {
        let mut app = app(1.0);
        let slow_link = signed(&app, 7, 1);
        app.announce(slow_link, 1).unwrap();
        add(&mut app, 2, 0.01);
        assert_eq!(
            try_propose(&mut app),
            None,
            "proposed while an announced payload was on its way"
        );
        assert!(app.add_payload(&slow_link.id(), vec![0.02; N]));
        let p = try_propose(&mut app).expect("a proposal once it is here");
        assert_eq!(p.updates.len(), 2);
        // One that never arrives holds the height until the deadline, no longer.
        let mut app = self::app(1.0);
        app.announce(signed(&app, 7, 1), 1).unwrap();
        add(&mut app, 2, 0.01);
        assert_eq!(try_propose(&mut app), None);
        app.set_now(1_000);
        assert_eq!(try_propose(&mut app).map(|p| p.updates.len()), Some(1));
    }

    #[test]
    fn a_proposal_waiting_for_its_scores_is_aggregated_once_however_often_it_is_checked() {
        // A validator holding a proposal checks it at every tick until its scores are in;
        // a proposer retries as often. Each list of updates is combined once per height.
        let mut app = app_with(AggregationRule::CenteredClip { iterations: 3 }, 1.0);
        let updates: Vec<IncludedUpdate> = (2..10)
            .map(|seed| add(&mut app, seed, f32::from(seed) * 0.001))
            .collect();
        let p = proposal(&mut app, &updates);
        for _ in 0..100 {
            assert!(!app.missing_for(&p).is_empty(), "scored without a job done");
        }
        assert_eq!(app.stats().aggregates_computed, 1);
        // The updates' scores, then the aggregate's, each asked while it is checked again.
        for _ in 0..2 {
            score_all(&mut app, |_| 0.9);
            for _ in 0..100 {
                let _ = app.missing_for(&p);
            }
        }
        assert!(app.missing_for(&p).is_empty());
        assert!(app.validate(Height(1), Round::new(0), &p));
        assert_eq!(app.stats().aggregates_computed, 1);

        // Proposing: retried until the aggregate's score is here, one computation per list.
        let mut proposer = app_with(AggregationRule::CenteredClip { iterations: 3 }, 1.0);
        for seed in 2..10 {
            add(&mut proposer, seed, f32::from(seed) * 0.001);
        }
        proposer.set_now(1_000);
        let next = Height(1);
        let retry = |proposer: &mut RoundApp| {
            for _ in 0..100 {
                let made = proposer.propose(next, Round::new(0), proposer.param_hash());
                assert_eq!(made, None, "proposed before every score was in");
            }
            score_all(proposer, |_| 0.9);
        };
        retry(&mut proposer); // the updates' scores
        retry(&mut proposer); // the aggregate's
        let made = proposer.propose(next, Round::new(0), proposer.param_hash());
        assert_eq!(made.map(|m| m.result_param_hash), Some(p.result_param_hash));
        assert_eq!(proposer.stats().aggregates_computed, 1);

        // A new height forgets them.
        app.set_committed(1, Arc::new(vec![0.6; N]), 2_000);
        assert!(app.combined.is_empty() && app.results.is_empty());
    }
}

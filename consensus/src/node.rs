//! One validator: Malachite's consensus core plus the single effect handler every host shares.
//!
//! The host feeds [`Node::start`], [`Node::on_message`] and [`Node::on_timeout`] and gets back
//! a list of [`Output`]s, which it must carry out **in order**: a [`Output::Persist`] must be
//! durable before any output after it is acted on, because Malachite appends our own vote to
//! the write-ahead log (and we persist the signer state) before the vote is published.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use malachitebft_core_consensus::{
    Effect, Input, LivenessMsg, LocallyProposedValue, Params, ProposedValue, Resumable, Resume,
    SignedConsensusMsg, State, process,
};
use malachitebft_core_types::{
    CertificateError, CommitCertificate, LinearTimeouts, Round, RoundCertificateType,
    SignedMessage, ThresholdParam, Timeout, Validity, Value as _, ValueOrigin, ValuePayload,
    VoteExtensionPolicy,
};

use crate::context::{
    self, Height, MAX_EVIDENCE, ProposalHeader, RoundProposal, SignedProposal, SignedVote,
    TabswarmContext, ValidatorSet, Value, ValueId,
};
use crate::evidence::{Evidence, SignedHeader, SignedVoteMsg};
use crate::gate::{self, Verdict};
use crate::genesis::Genesis;
use crate::identity::{Address, Keypair, Signature};
use crate::ledger::{self, Block, CertError, CommitCert, Ledger};
use crate::signer::SignerState;
use crate::verified::VerifiedVotes;
use crate::wire::{Message, SignedProposalMsg};

/// What the application decides: what to propose and whether a proposal is valid.
pub trait Application {
    /// Build this round's proposal on top of `base_param_hash` (DESIGN.md, "A round", step 3).
    ///
    /// `None` means "not ready" (e.g. too few updates yet): the node remembers the request and
    /// asks again when the host calls [`Node::retry_propose`]; if the round's propose timeout
    /// fires first, consensus moves to the next round as for a silent proposer.
    fn propose(
        &mut self,
        height: Height,
        round: Round,
        base_param_hash: [u8; 32],
    ) -> Option<RoundProposal>;

    /// Recompute and judge a proposal made in `round` that already passed the ledger's
    /// structural checks (step 4); `false` makes this validator prevote nil.
    fn validate(&mut self, height: Height, round: Round, proposal: &RoundProposal) -> bool;
}

/// A write-ahead log entry: one input Malachite asked us to log.
pub type WalEntry = Input<TabswarmContext>;

/// Something to make durable.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Record {
    /// Append to the current height's write-ahead log.
    Wal(Box<WalEntry>),
    /// Replace the stored signer state.
    Signer(SignerState),
    /// A committed block; the write-ahead log of its height may be dropped.
    Block(Box<Block>),
}

/// What a host must do, in order.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Output {
    /// Make this durable before acting on any later output.
    Persist(Record),
    /// Send to every validator.
    Broadcast(Message),
    /// Call [`Node::on_timeout`] with this timeout after the given delay, replacing any
    /// pending timer for the same timeout.
    ScheduleTimer(Timeout, Duration),
    /// Drop a pending timer.
    CancelTimer(Timeout),
    /// Drop every pending timer.
    CancelAllTimers,
    /// A block was committed (it was persisted just before this output).
    Committed(Box<Block>),
    /// Work is left (the next height has started): call [`Node::resume`] soon. One call never
    /// runs more than one height, so a lone validator cannot loop forever inside it.
    CallAgain,
}

/// What a node has persisted: all it needs to restart.
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    /// Committed blocks from height 1.
    pub blocks: Vec<Block>,
    /// Write-ahead log of the height in progress.
    pub wal: Vec<WalEntry>,
    /// Last signer state.
    pub signer: SignerState,
}

impl Persisted {
    /// Applies a record as a durable store would.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Wal(e) => self.wal.push((**e).clone()),
            Record::Signer(s) => self.signer = s.clone(),
            Record::Block(b) => {
                self.blocks.push((**b).clone());
                self.wal.clear();
            }
        }
    }
}

/// Counters of what a node refused, for tests and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages fed in.
    pub received: u64,
    /// Signatures that did not verify (forged, cross-run, cross-kind replays).
    pub bad_signatures: u64,
    /// Votes or proposals for a height already committed (replays from older heights).
    pub stale: u64,
    /// Evidence refused.
    pub bad_evidence: u64,
    /// Proposals judged invalid (we voted nil).
    pub invalid_proposals: u64,
    /// Signing requests the signer refused (would have double-signed).
    pub refused_to_sign: u64,
    /// Blocks received from peers and applied (catch-up after missing a commit).
    pub caught_up: u64,
    /// Blocks received that the ledger refused.
    pub bad_blocks: u64,
}

/// Why a node could not be created or could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The persisted chain does not verify.
    #[error("persisted chain: {0}")]
    Chain(#[from] ledger::ChainError),
    /// Every validator was slashed: no one can decide the next height.
    #[error("the validator set for the next height is empty")]
    NoValidators,
    /// A committed decision did not make a valid block (a bug or a corrupted store).
    #[error("decided block refused by the ledger: {0}")]
    Block(#[from] ledger::BlockError),
    /// The decided value was never seen.
    #[error("decided value {0} is unknown")]
    UnknownValue(ValueId),
}

/// Bound on proposals kept for heights we have not reached.
const FUTURE_PROPOSALS: usize = 64;
/// Bound on the evidence pool.
const EVIDENCE_POOL: usize = 256;
/// Bound on blocks kept for heights we have not reached.
const FUTURE_BLOCKS: usize = 64;
/// Most blocks sent in answer to one stale message.
const CATCH_UP_BATCH: u64 = 16;
/// Bound on remembered (sender, our height) stale-vote counts.
const SERVED_MEMORY: usize = 4096;

/// Everything the effect handler touches (kept apart from Malachite's `State`, which
/// `process!` borrows mutably while effects are handled).
struct Host {
    ctx: TabswarmContext,
    key: Keypair,
    address: Address,
    timeouts: LinearTimeouts,
    signer: SignerState,
    values: BTreeMap<ValueId, Value>,
    outputs: Vec<Output>,
    pending: VecDeque<Input<TabswarmContext>>,
    replaying: bool,
    finalized: Option<(CommitCertificate<TabswarmContext>, Vec<Evidence>)>,
    evidence_pool: BTreeMap<Address, Evidence>,
    value_request: Option<(Height, Round)>,
    /// A value request the application could not answer yet.
    deferred_request: Option<(Height, Round)>,
    /// The proposal `on_proposal` just verified, so Malachite's check of it right after
    /// does not run ed25519 a second time.
    verified_proposal: Option<(ProposalHeader, Signature)>,
    /// Votes verified (or signed) at this height: each is checked with ed25519 once.
    verified: VerifiedVotes,
    stats: Stats,
}

/// A validator (or a non-voting follower, if its key has no stake).
pub struct Node<A> {
    state: State<TabswarmContext>,
    host: Host,
    ledger: Ledger,
    app: A,
    future_proposals: Vec<SignedProposalMsg>,
    future_blocks: BTreeMap<Height, Block>,
    stale_seen: BTreeMap<(Address, Height), u32>,
}

impl<A> std::fmt::Debug for Node<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("address", &self.host.address)
            .field("height", &self.ledger.height())
            .finish_non_exhaustive()
    }
}

impl<A: Application> Node<A> {
    /// A node at genesis. Call [`Node::start`] next.
    pub fn new(genesis: Genesis, key: Keypair, app: A) -> Result<Self, NodeError> {
        Self::restart(genesis, key, app, Persisted::default())
    }

    /// A node restored from what it persisted. Call [`Node::start`] next: it replays the
    /// write-ahead log, re-sending our own recorded votes rather than signing new ones.
    pub fn restart(
        genesis: Genesis,
        key: Keypair,
        app: A,
        persisted: Persisted,
    ) -> Result<Self, NodeError> {
        let timeouts = context::timeouts(&genesis.timeouts_ms);
        let ledger = Ledger::verify_chain(genesis, &persisted.blocks)?;
        let ctx = TabswarmContext::new(ledger.genesis().run_id());
        let set = ledger.next_validator_set();
        if set.validators().is_empty() {
            return Err(NodeError::NoValidators);
        }
        let address = key.address();
        let state = State::new(
            ctx,
            ledger.height().increment_next(),
            set,
            Params {
                address,
                threshold_params: Default::default(),
                // Parts mode is what lets the application judge a proposal: in ProposalOnly
                // mode Malachite marks every proposal valid by itself.
                value_payload: ValuePayload::ProposalAndParts,
                enabled: true,
            },
            1024,
            256,
        );
        let mut node = Self {
            state,
            host: Host {
                ctx,
                key,
                address,
                timeouts,
                signer: persisted.signer,
                values: BTreeMap::new(),
                outputs: Vec::new(),
                pending: VecDeque::new(),
                replaying: false,
                finalized: None,
                evidence_pool: BTreeMap::new(),
                value_request: None,
                deferred_request: None,
                verified_proposal: None,
                verified: VerifiedVotes::default(),
                stats: Stats::default(),
            },
            ledger,
            app,
            future_proposals: Vec::new(),
            future_blocks: BTreeMap::new(),
            stale_seen: BTreeMap::new(),
        };
        node.host.pending.extend(persisted.wal);
        Ok(node)
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.host.address
    }

    /// The committed chain.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The application, to feed it what the host learns (updates, payloads).
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }

    /// Refusal counters.
    pub fn stats(&self) -> &Stats {
        &self.host.stats
    }

    /// This node's buffers as (name, length, most it may hold): what an operator watches for
    /// a queue that only grows.
    pub fn buffers(&self) -> [(&'static str, usize, usize); 4] {
        [
            (
                "future_proposals",
                self.future_proposals.len(),
                FUTURE_PROPOSALS,
            ),
            ("future_blocks", self.future_blocks.len(), FUTURE_BLOCKS),
            (
                "evidence_pool",
                self.host.evidence_pool.len(),
                EVIDENCE_POOL,
            ),
            ("stale_votes_seen", self.stale_seen.len(), SERVED_MEMORY),
        ]
    }

    /// The current signer state (also handed out as [`Record::Signer`]).
    pub fn signer_state(&self) -> &SignerState {
        &self.host.signer
    }

    /// Height being decided.
    pub fn height(&self) -> Height {
        self.state.height()
    }

    /// Round in progress.
    pub fn round(&self) -> Round {
        self.state.round()
    }

    /// Starts the next height (replaying the write-ahead log after a restart).
    pub fn start(&mut self) -> Result<Vec<Output>, NodeError> {
        let wal: Vec<WalEntry> = self.host.pending.drain(..).collect();
        let height = self.ledger.height().increment_next();
        let set = self.ledger.next_validator_set();
        for entry in &wal {
            self.host.learn_value(entry);
        }
        if wal.is_empty() {
            self.feed(start_input(height, set, false));
        } else {
            self.state.index_wal_entries(wal.iter());
            self.host.replaying = true;
            self.feed(start_input(height, set, true));
            for entry in wal {
                self.feed(entry);
            }
            self.host.replaying = false;
            self.state.reset_entries_index();
        }
        self.settle()
    }

    /// Handles bytes from the network. Undecodable bytes are dropped with the reason.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<Vec<Output>, NodeError> {
        match Message::decode(bytes) {
            Ok(msg) => self.on_message(msg),
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Handles a decoded message.
    pub fn on_message(&mut self, msg: Message) -> Result<Vec<Output>, NodeError> {
        self.host.stats.received += 1;
        let height = self.state.height();
        match msg {
            Message::Vote(v) => {
                if v.vote.height < height {
                    self.host.stats.stale += 1;
                    self.serve_catch_up(&v);
                } else {
                    self.feed(Input::Vote(v.into()));
                }
            }
            Message::Proposal(p) => {
                if p.proposal.height < height {
                    self.host.stats.stale += 1;
                } else if p.proposal.height > height {
                    if self.future_proposals.len() < FUTURE_PROPOSALS {
                        self.future_proposals.push(p);
                    }
                } else {
                    self.on_proposal(p);
                }
            }
            Message::Evidence(e) => self.on_evidence(e),
            Message::Block(b) => self.on_block(*b)?,
            Message::Polka(c) => self.feed(Input::PolkaCertificate(c.into())),
            Message::RoundCert(c) => self.feed(Input::RoundCertificate(c.into())),
        }
        self.settle()
    }

    /// A peer voted at a height we already committed: it missed the decision. Send it the
    /// blocks it lacks.
    ///
    /// A peer's prevote and precommit for the height we just decided keep arriving after we
    /// moved on; that is normal. So per sender and per height of ours we count its stale
    /// votes and answer the first one only if it is two or more heights back, then every
    /// third one (its rebroadcasts). Answers must repeat: a batch can be lost, and if the
    /// laggard's stake is needed for our quorum our height will not move until it catches up.
    /// A peer replaying old votes gets at most one batch per three replays.
    fn serve_catch_up(&mut self, v: &SignedVoteMsg) {
        let ours = self.state.height();
        // Only a validator's laggard vote earns blocks: otherwise every fresh key could make
        // us broadcast a batch of blocks (an amplification anyone could use).
        let member = self
            .ledger
            .genesis()
            .validators
            .iter()
            .any(|(a, _)| *a == v.vote.validator);
        if !member || !self.host.ctx.verify_vote(&v.clone().into()) {
            return;
        }
        if self.stale_seen.len() >= SERVED_MEMORY {
            self.stale_seen.clear();
        }
        let seen = self.stale_seen.entry((v.vote.validator, ours)).or_default();
        *seen += 1;
        let one_back = v.vote.height.0 + 1 == ours.0;
        if *seen % 3 != if one_back { 0 } else { 1 } {
            return;
        }
        // The chain starts at height 1: a (signed, so Byzantine) vote for height 0 is
        // answered from block 1, not from a block index of 0 - 1.
        let from = v.vote.height.0.max(1);
        let to = (from + CATCH_UP_BATCH).min(self.ledger.height().0 + 1);
        for h in from..to {
            if let Some(b) = self.ledger.blocks().get((h - 1) as usize) {
                self.host
                    .outputs
                    .push(Output::Broadcast(Message::Block(Box::new(b.clone()))));
            }
        }
    }

    /// A committed block from a peer: safe to apply once its certificate holds > 2/3 of the
    /// stake of that height, because Tendermint never certifies two values at one height.
    fn on_block(&mut self, b: Block) -> Result<(), NodeError> {
        let height = self.state.height();
        if b.height < height {
            return Ok(());
        }
        if b.height > height {
            if self.future_blocks.len() < FUTURE_BLOCKS {
                self.future_blocks.insert(b.height, b);
            }
            return Ok(());
        }
        let (ctx, verified) = (self.host.ctx, &mut self.host.verified);
        if self
            .ledger
            .append_with(b.clone(), |v| verified.verify(&ctx, None, v))
            .is_err()
        {
            self.host.stats.bad_blocks += 1;
            return Ok(());
        }
        self.host.stats.caught_up += 1;
        // Any decision Malachite reaches for this height now is for the same value.
        self.host.finalized = None;
        self.after_commit(b, Vec::new())
    }

    /// Handles a timer set by [`Output::ScheduleTimer`].
    pub fn on_timeout(&mut self, timeout: Timeout) -> Result<Vec<Output>, NodeError> {
        self.feed(Input::TimeoutElapsed(timeout));
        self.settle()
    }

    fn on_evidence(&mut self, e: Evidence) {
        if !self.ledger.evidence_is_useful(&e) {
            self.host.stats.bad_evidence += 1;
            return;
        }
        if self.host.evidence_pool.len() < EVIDENCE_POOL {
            self.host.evidence_pool.entry(e.offender()).or_insert(e);
        }
    }

    fn on_proposal(&mut self, p: SignedProposalMsg) {
        let signed: SignedProposal = p.clone().into();
        if !self.host.ctx.verify_proposal(&signed) {
            // Malachite would refuse it too; counting here keeps one place for the number.
            self.host.stats.bad_signatures += 1;
            return;
        }
        self.host.verified_proposal = Some((p.proposal.header(), p.signature));
        let value = p.proposal.value.clone();
        let id = value.id();
        self.host.values.insert(id, value.clone());
        let valid = self.ledger.check_value(&value).is_ok()
            && self
                .app
                .validate(p.proposal.height, p.proposal.round, &value.proposal);
        if !valid {
            self.host.stats.invalid_proposals += 1;
        }
        let proposed = ProposedValue {
            height: p.proposal.height,
            round: p.proposal.round,
            valid_round: p.proposal.pol_round,
            proposer: p.proposal.proposer,
            value,
            validity: Validity::from_bool(valid),
        };
        self.feed(Input::Proposal(signed));
        self.feed(Input::ProposedValue(proposed, ValueOrigin::Consensus));
    }

    /// Runs one input through Malachite with the shared effect handler.
    fn feed(&mut self, input: Input<TabswarmContext>) {
        let host = &mut self.host;
        let result: Result<(), malachitebft_core_consensus::Error<TabswarmContext>> = process!(
            input: input,
            state: &mut self.state,
            metrics: &(),
            with: effect => host.handle_effect(effect)
        );
        // An error aborts only this input (e.g. the signer refused); consensus state stays
        // consistent because Malachite applies nothing after the failing effect.
        drop(result);
    }

    /// Carries on after [`Output::CallAgain`].
    pub fn resume(&mut self) -> Result<Vec<Output>, NodeError> {
        self.settle()
    }

    /// Judges a gossiped message as a host must before relaying it (membership, proposer,
    /// certificate stake; see [`crate::gate`]). Votes go through this node's memo of verified
    /// votes, so consensus does not run ed25519 on them a second time when fed in next.
    pub fn judge(&mut self, msg: &Message) -> Verdict {
        let (ctx, verified) = (self.host.ctx, &mut self.host.verified);
        gate::judge(&self.ledger, &ctx, msg, |v| verified.verify(&ctx, None, v))
    }

    /// Whether this node is the proposer of the current round and still owes its proposal.
    pub fn awaiting_proposal(&self) -> bool {
        self.host.deferred_request == Some((self.state.height(), self.state.round()))
    }

    /// Asks the application again for a proposal it deferred, if this round still wants one.
    pub fn retry_propose(&mut self) -> Result<Vec<Output>, NodeError> {
        if let Some(request) = self.host.deferred_request.take()
            && request == (self.state.height(), self.state.round())
        {
            self.host.value_request = Some(request);
        }
        self.settle()
    }

    /// Answers value requests, commits a finalized height and starts the next, until quiet.
    fn settle(&mut self) -> Result<Vec<Output>, NodeError> {
        loop {
            if let Some((cert, evidence)) = self.host.finalized.take() {
                self.commit(cert, evidence)?;
                if self.host.value_request.is_some() || !self.host.pending.is_empty() {
                    self.host.outputs.push(Output::CallAgain);
                }
                break;
            }
            if let Some((height, round)) = self.host.value_request.take() {
                self.propose(height, round);
                continue;
            }
            if let Some(input) = self.host.pending.pop_front() {
                self.feed(input);
                continue;
            }
            break;
        }
        Ok(std::mem::take(&mut self.host.outputs))
    }

    fn propose(&mut self, height: Height, round: Round) {
        if height != self.state.height() {
            return;
        }
        let Some(proposal) = self.app.propose(height, round, self.ledger.param_hash()) else {
            self.host.deferred_request = Some((height, round));
            return;
        };
        let mut evidence: Vec<Evidence> = self
            .host
            .evidence_pool
            .values()
            .filter(|e| self.ledger.evidence_is_useful(e) && e.height() < height)
            .take(MAX_EVIDENCE)
            .cloned()
            .collect();
        evidence.sort_by_key(|e| e.offender());
        let value = Value { proposal, evidence };
        self.host.values.insert(value.id(), value.clone());
        self.feed(Input::Propose(LocallyProposedValue::new(
            height, round, value,
        )));
    }

    fn commit(
        &mut self,
        cert: CommitCertificate<TabswarmContext>,
        evidence: Vec<Evidence>,
    ) -> Result<(), NodeError> {
        if cert.height != self.ledger.height().increment_next() {
            // Already applied from a peer's block.
            return Ok(());
        }
        let value = self
            .host
            .values
            .get(&cert.value_id)
            .cloned()
            .ok_or(NodeError::UnknownValue(cert.value_id))?;
        let block = Block {
            height: cert.height,
            parent: self.ledger.tip_hash(),
            credits: ledger::credits_for(&value),
            value,
            certificate: CommitCert::from(&cert),
        };
        // Malachite verified each of these precommits on arrival and the certificate in
        // `decide`: the memo answers, so no signature is checked a third time.
        let (ctx, verified) = (self.host.ctx, &mut self.host.verified);
        self.ledger
            .append_with(block.clone(), |v| verified.verify(&ctx, None, v))?;
        self.after_commit(block, evidence)
    }

    /// Persists and announces a block already appended to the ledger, then starts the next
    /// height.
    fn after_commit(&mut self, block: Block, evidence: Vec<Evidence>) -> Result<(), NodeError> {
        self.host.verified.clear();
        for e in &block.value.evidence {
            self.host.evidence_pool.remove(&e.offender());
        }
        for e in evidence {
            if self.ledger.evidence_is_useful(&e) {
                self.host
                    .outputs
                    .push(Output::Broadcast(Message::Evidence(e.clone())));
                self.host.evidence_pool.entry(e.offender()).or_insert(e);
            }
        }
        self.host
            .outputs
            .push(Output::Persist(Record::Block(Box::new(block.clone()))));
        self.host.outputs.push(Output::Committed(Box::new(block)));
        self.host.values.clear();
        let set = self.ledger.next_validator_set();
        if set.validators().is_empty() {
            return Err(NodeError::NoValidators);
        }
        let next = self.ledger.height().increment_next();
        self.feed(start_input(next, set, false));
        let waiting = std::mem::take(&mut self.future_proposals);
        for p in waiting {
            if p.proposal.height == next {
                self.on_proposal(p);
            } else if p.proposal.height > next {
                self.future_proposals.push(p);
            }
        }
        self.future_blocks.retain(|h, _| *h >= next);
        // Counts are kept per height of ours; those of decided heights are never read again.
        self.stale_seen.retain(|(_, h), _| *h >= next);
        if let Some(b) = self.future_blocks.remove(&next) {
            self.on_block(b)?;
        }
        Ok(())
    }
}

fn start_input(height: Height, set: ValidatorSet, restart: bool) -> Input<TabswarmContext> {
    // No target time: Malachite then finalizes at once and never reads the clock for it.
    Input::StartHeight(height, set, restart, None, VoteExtensionPolicy::Disabled)
}

trait NextHeight {
    fn increment_next(self) -> Height;
}

impl NextHeight for Height {
    fn increment_next(self) -> Height {
        Height(self.0 + 1)
    }
}

/// The effect handler refused to answer; Malachite aborts the current input.
#[derive(Debug, thiserror::Error)]
#[error("effect refused: {0}")]
struct Refused(String);

impl Host {
    fn learn_value(&mut self, entry: &WalEntry) {
        match entry {
            Input::Proposal(p) => {
                self.values
                    .insert(p.message.value.id(), p.message.value.clone());
            }
            Input::ProposedValue(v, _) => {
                self.values.insert(v.value.id(), v.value.clone());
            }
            _ => (),
        }
    }

    fn persist(&mut self, record: Record) {
        self.outputs.push(Output::Persist(record));
    }

    fn handle_effect(
        &mut self,
        effect: Effect<TabswarmContext>,
    ) -> Result<Resume<TabswarmContext>, Refused> {
        use Effect as E;
        Ok(match effect {
            E::CancelAllTimeouts(r) => {
                self.outputs.push(Output::CancelAllTimers);
                r.resume_with(())
            }
            E::CancelTimeout(t, r) => {
                self.outputs.push(Output::CancelTimer(t));
                r.resume_with(())
            }
            E::ScheduleTimeout(t, r) => {
                let after = self.timeouts.duration_for(t);
                self.outputs.push(Output::ScheduleTimer(t, after));
                r.resume_with(())
            }
            E::StartRound(_, _, _, _, r) => r.resume_with(()),
            E::PublishConsensusMsg(msg, r) => {
                let out = match msg {
                    SignedConsensusMsg::Vote(v) => Message::Vote(v.into()),
                    SignedConsensusMsg::Proposal(p) => Message::Proposal(p.into()),
                };
                self.outputs.push(Output::Broadcast(out));
                r.resume_with(())
            }
            E::PublishLivenessMsg(msg, r) => {
                match msg {
                    LivenessMsg::Vote(v) => {
                        self.outputs
                            .push(Output::Broadcast(Message::Vote(v.into())));
                    }
                    LivenessMsg::PolkaCertificate(c) => {
                        self.outputs
                            .push(Output::Broadcast(Message::Polka(c.into())));
                    }
                    LivenessMsg::SkipRoundCertificate(c) => {
                        self.outputs
                            .push(Output::Broadcast(Message::RoundCert(c.into())));
                    }
                }
                r.resume_with(())
            }
            E::RepublishVote(v, r) => {
                self.outputs
                    .push(Output::Broadcast(Message::Vote(v.into())));
                r.resume_with(())
            }
            E::RepublishRoundCertificate(c, r) => {
                self.outputs
                    .push(Output::Broadcast(Message::RoundCert(c.into())));
                r.resume_with(())
            }
            E::GetValue(height, round, _, r) => {
                self.value_request = Some((height, round));
                r.resume_with(())
            }
            // Our proposal message carries the whole value and Malachite publishes it right
            // after this effect, so there is nothing to re-stream.
            E::RestreamProposal(_, _, _, _, _, r) => r.resume_with(()),
            E::CertVerifiedSyncValue(_, _, r) => r.resume_with(()),
            E::CertRejectedSyncValue(_, _, _, r) => r.resume_with(()),
            E::Decide(_, _, r) => r.resume_with(()),
            E::SignVote(vote, r) => {
                let again = self.signer.sign_vote(&vote).map_err(|e| self.refuse(e))?;
                if !again {
                    self.persist(Record::Signer(self.signer.clone()));
                }
                let signed = self.ctx.sign_vote(&self.key, vote);
                self.verified.remember(&signed);
                r.resume_with(signed)
            }
            E::SignProposal(proposal, r) => {
                let again = self
                    .signer
                    .sign_proposal(&proposal.header())
                    .map_err(|e| self.refuse(e))?;
                if !again {
                    self.persist(Record::Signer(self.signer.clone()));
                }
                r.resume_with(self.ctx.sign_proposal(&self.key, proposal))
            }
            E::VerifySignature(msg, key, r) => {
                // `key` comes decompressed from the validator set: no need to rebuild it from
                // the address for every vote.
                let ok = match &msg.message {
                    malachitebft_core_consensus::ConsensusMsg::Vote(v) => {
                        Address::of(&key) == v.validator
                            && self.verified.verify(
                                &self.ctx,
                                Some(&key),
                                &SignedMessage::new(v.clone(), msg.signature),
                            )
                    }
                    malachitebft_core_consensus::ConsensusMsg::Proposal(p) => {
                        Address::of(&key) == p.proposer
                            && (self.verified_proposal.take() == Some((p.header(), msg.signature))
                                || self.ctx.verify_proposal_with_key(
                                    &key,
                                    &SignedMessage::new(p.clone(), msg.signature),
                                ))
                    }
                };
                if !ok {
                    self.stats.bad_signatures += 1;
                }
                r.resume_with(ok)
            }
            E::VerifyCommitCertificate(cert, set, _, r) => r.resume_with(verify_cert(
                &self.ctx,
                &mut self.verified,
                &CommitCert::from(&cert),
                &set,
            )),
            E::VerifyExtendedCommitCertificate(cert, set, _, _, r) => {
                let cert = cert.trim_vote_extensions();
                r.resume_with(verify_cert(
                    &self.ctx,
                    &mut self.verified,
                    &CommitCert::from(&cert),
                    &set,
                ))
            }
            E::VerifyPolkaCertificate(cert, set, t, r) => {
                let votes: Vec<SignedVote> = cert.votes(&self.ctx).collect();
                r.resume_with(verify_votes(
                    &self.ctx,
                    &mut self.verified,
                    &votes,
                    &set,
                    t.quorum,
                ))
            }
            E::VerifyRoundCertificate(cert, set, t, r) => {
                // A skip certificate needs only more than 1/3 of stake (f+1).
                let threshold = match cert.cert_type {
                    RoundCertificateType::Skip => t.honest,
                    RoundCertificateType::Precommit => t.quorum,
                };
                let votes: Vec<SignedVote> = cert.votes(&self.ctx).collect();
                r.resume_with(verify_votes(
                    &self.ctx,
                    &mut self.verified,
                    &votes,
                    &set,
                    threshold,
                ))
            }
            E::WalAppend(_, input, r) => {
                if !self.replaying {
                    self.persist(Record::Wal(Box::new(input)));
                }
                r.resume_with(())
            }
            E::ExtendVote(_, _, _, _, r) => r.resume_with(None),
            E::VerifyVoteExtension(_, _, _, _, _, _, r) => r.resume_with(Ok(())),
            E::Finalize(cert, _, misbehavior, r) => {
                let mut evidence = Vec::new();
                for (_, pairs) in misbehavior.votes.iter() {
                    for (a, b) in pairs {
                        evidence.push(Evidence::double_vote(
                            SignedVoteMsg::from(a.clone()),
                            SignedVoteMsg::from(b.clone()),
                        ));
                    }
                }
                for (_, pairs) in misbehavior.proposals.iter() {
                    for (a, b) in pairs {
                        let h = |p: &SignedProposal| SignedHeader {
                            header: p.message.header(),
                            signature: p.signature,
                        };
                        evidence.push(Evidence::double_proposal(h(a), h(b)));
                    }
                }
                self.finalized = Some((cert, evidence));
                r.resume_with(())
            }
        })
    }

    fn refuse(&mut self, e: crate::signer::SignError) -> Refused {
        self.stats.refused_to_sign += 1;
        Refused(e.to_string())
    }
}

// The error type is Malachite's resume value, so its size is not ours to choose.
#[allow(clippy::result_large_err)]
fn verify_cert(
    ctx: &TabswarmContext,
    verified: &mut VerifiedVotes,
    cert: &CommitCert,
    set: &ValidatorSet,
) -> Result<(), CertificateError<TabswarmContext>> {
    cert.verify_with(set, |v| verified.verify(ctx, None, v))
        .map_err(|e| match e {
            CertError::UnknownSigner(a) => CertificateError::UnknownValidator(a),
            CertError::DuplicateSigner(a) => CertificateError::DuplicateVote(a),
            CertError::BadSignature(a) => CertificateError::UnknownValidator(a),
            CertError::NoQuorum { signed, total } => CertificateError::NotEnoughVotingPower {
                signed,
                total,
                expected: total * 2 / 3 + 1,
            },
        })
}

#[allow(clippy::result_large_err)]
fn verify_votes(
    ctx: &TabswarmContext,
    verified: &mut VerifiedVotes,
    votes: &[SignedVote],
    set: &ValidatorSet,
    threshold: ThresholdParam,
) -> Result<(), CertificateError<TabswarmContext>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut signed = 0u64;
    for v in votes {
        let power = set.power_of(&v.message.validator);
        if power == 0 {
            return Err(CertificateError::UnknownValidator(v.message.validator));
        }
        if !seen.insert(v.message.validator) {
            return Err(CertificateError::DuplicateVote(v.message.validator));
        }
        if !verified.verify(ctx, None, v) {
            return Err(CertificateError::VerificationError(None));
        }
        signed += power;
    }
    let total = malachitebft_core_types::ValidatorSet::total_voting_power(set);
    // Genesis caps total stake at u64::MAX / 3, so these products cannot overflow.
    if !threshold.is_met(signed, total) {
        return Err(CertificateError::NotEnoughVotingPower {
            signed,
            total,
            expected: threshold.min_expected(total),
        });
    }
    Ok(())
}

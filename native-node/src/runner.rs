//! The node's event loop: a thin driver of [`tabswarm_peer::Peer`]. Swarm events, finished
//! jobs and time go in as inputs; effects come out and are carried out strictly in order (a
//! persist is committed to redb before the next effect). Every protocol decision is the
//! peer's; this file moves bytes, runs jobs on the blocking pool, keeps the store, and looks
//! after connectivity (dialling, kad, relays), metrics and the status page.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, kad};
use tabswarm_consensus::gate::Verdict;
use tabswarm_consensus::genesis::{Genesis, hex};
use tabswarm_consensus::identity::Keypair;
use tabswarm_consensus::node::Record;
use tabswarm_peer::jobs::{self, DataPlan, Job};
use tabswarm_peer::wire::Response;
use tabswarm_peer::{Effect, Input, Peer, Persist, Queue, Restored, Roles, TICK_MS};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use tabswarm_net::protocols::{Link, Reply, Routed};

use crate::data_dir::DataDir;
use crate::job_pool::{JobPool, Lane};
use crate::metrics::{Metrics, Status};
use crate::net::behaviour::{Behaviour, BehaviourEvent};
use crate::net::connectivity::Connectivity;
use crate::observe::{self, NetView};
use crate::store::Store;

/// Finished jobs queued for the loop before job threads wait for it to take them.
const JOB_QUEUE: usize = 64;

/// Everything the loop needs, prepared by `run`.
pub(crate) struct Setup {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) store: Store,
    /// The node's home (the run's data lives in its `data/` folder).
    pub(crate) home: std::path::PathBuf,
    pub(crate) genesis: Genesis,
    pub(crate) key: Keypair,
    /// `None` in a run whose data is on the network: the peer hands one over when it is here.
    pub(crate) plan: Option<Arc<DataPlan>>,
    pub(crate) roles: Roles,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) relay_only: bool,
    pub(crate) metrics: Metrics,
    pub(crate) status: Arc<Mutex<Status>>,
    pub(crate) stop_at_height: Option<u64>,
    /// Threads for training, scoring and testing jobs.
    pub(crate) job_threads: usize,
}

struct Done {
    output: jobs::Output,
    elapsed_ms: u64,
}

pub(crate) struct Runner {
    swarm: Swarm<Behaviour>,
    store: Store,
    peer: Peer<PeerId>,
    plan: Option<Arc<DataPlan>>,
    data_dir: DataDir,
    link: Link,
    started: Instant,
    jobs_tx: mpsc::Sender<Done>,
    jobs_rx: mpsc::Receiver<Done>,
    job_pool: JobPool,
    net: Connectivity,
    metrics: Metrics,
    status: Arc<Mutex<Status>>,
    stop_at_height: Option<u64>,
}

impl Runner {
    pub(crate) fn new(setup: Setup) -> anyhow::Result<Self> {
        let Setup {
            swarm,
            store,
            home,
            genesis,
            key,
            plan,
            roles,
            bootstrap,
            relay_only,
            metrics,
            status,
            stop_at_height,
            job_threads,
        } = setup;
        let data_dir = DataDir::new(&home);
        let restored = Restored {
            persisted: store.load()?,
            params: [store.params()?, store.latest_checkpoint()?]
                .into_iter()
                .flatten()
                .collect(),
            updates: store.updates()?,
            data: data_dir
                .load()
                .context("reading the run's data in the home")?,
        };
        let link = Link::new(&genesis.run_id());
        let peer = Peer::new(genesis, key, roles, restored, 0)
            .context("restoring the node from its store")?;
        let (jobs_tx, jobs_rx) = mpsc::channel(JOB_QUEUE);
        Ok(Self {
            swarm,
            store,
            peer,
            plan,
            data_dir,
            link,
            started: Instant::now(),
            jobs_tx,
            jobs_rx,
            job_pool: JobPool::new(job_threads),
            net: Connectivity::new(bootstrap, relay_only),
            metrics,
            status,
            stop_at_height,
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(crate) async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        self.link
            .subscribe(&mut self.swarm.behaviour_mut().peer)
            .context("subscribing to the run's topics")?;
        let remembered = self.store.peers()?;
        self.net.start(&mut self.swarm, remembered);
        // The peer's first jobs (scoring the base, testing the parameters) and questions.
        self.input(Input::Tick, Reply::None)?;
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
        loop {
            let deadline = self
                .peer
                .next_deadline()
                .map(|ms| self.started + Duration::from_millis(ms));
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => {
                    info!(height = self.peer.ledger().height().0, "stopping; state is on disk");
                    return Ok(());
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event)?,
                Some(done) = self.jobs_rx.recv() => self.input(
                    Input::JobDone { output: done.output, elapsed_ms: done.elapsed_ms },
                    Reply::None,
                )?,
                _ = timer => self.input(Input::Tick, Reply::None)?,
                _ = tick.tick() => {
                    self.on_tick()?;
                    if let Some(stop) = self.stop_at_height
                        && self.peer.ledger().height().0 >= stop
                    {
                        info!(height = stop, "reached --stop-at-height");
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Feeds one input to the peer and carries out its effects in order.
    fn input(&mut self, input: Input<PeerId>, mut reply: Reply) -> anyhow::Result<()> {
        let bytes_in = match &input {
            Input::Gossip { data, .. } => data.len(),
            Input::Response {
                response: Response::Chunk(b),
                ..
            } => b.len(),
            _ => 0,
        };
        self.metrics.bytes_in.inc_by(bytes_in as u64);
        let effects = self.peer.handle(self.now_ms(), input);
        for effect in effects {
            match &effect {
                Effect::Publish { data, .. } => {
                    self.metrics.bytes_out.inc_by(data.len() as u64);
                }
                Effect::Respond(Response::Chunk(b)) => {
                    self.metrics.bytes_out.inc_by(b.len() as u64);
                }
                Effect::Validated(Verdict::Reject) => {
                    self.metrics.messages_rejected.inc();
                }
                _ => {}
            }
            let Some(effect) =
                self.link
                    .carry_out(&mut self.swarm.behaviour_mut().peer, effect, &mut reply)
            else {
                continue;
            };
            match effect {
                Effect::Persist(p) => self.persist(p).context(
                    "keeping the node's state in its home failed (a full disk? free some space \
                     and start the node again: it resumes from what it stored)",
                )?,
                Effect::Run(job) => self.run_job(job),
                Effect::UsePlan(plan) => {
                    info!(
                        train_shards = plan.shards().len(),
                        "training on the run's shards from the network"
                    );
                    self.plan = Some(plan);
                }
                Effect::Penalise(peer) => {
                    warn!(%peer, "peer sent provably bad data; disconnecting it");
                    if !self.net.is_relay(&peer) {
                        let _ = self.swarm.disconnect_peer_id(peer);
                    }
                }
                Effect::Event(event) => observe::on_event(&self.metrics, self.peer.credit(), event),
                _ => {}
            }
        }
        Ok(())
    }

    fn persist(&mut self, p: Persist) -> anyhow::Result<()> {
        match p {
            Persist::Consensus(record) => {
                self.store.persist(&record)?;
                if let Record::Signer(_) = record {
                    self.refresh_status();
                }
            }
            Persist::Params {
                height,
                bytes,
                checkpoint,
            } => {
                self.store.put_params(height, &bytes)?;
                if checkpoint {
                    self.store.put_checkpoint(height, &bytes)?;
                }
            }
            Persist::Update {
                height,
                id,
                announcement,
                payload,
            } => self
                .store
                .put_update(height, &id, &announcement, &payload)?,
            Persist::Data(record) => self.data_dir.apply(&record)?,
        }
        Ok(())
    }

    /// Jobs run on the job pool's threads, scores first: the loop (votes, timers, gossip)
    /// never waits for them.
    fn run_job(&mut self, job: Job) {
        let plan = self.plan.clone();
        let tx = self.jobs_tx.clone();
        let lane = match job {
            Job::Validate { .. } => Lane::Score,
            Job::Train { .. } => Lane::Train,
            Job::Test { .. } => Lane::Test,
        };
        let queued = self.job_pool.spawn(lane, move || {
            let t0 = Instant::now();
            // The peer sends no job before the plan; a failed job is what it would make of one.
            let output = match &plan {
                Some(plan) => jobs::run(plan, job),
                None => jobs::failed(&job, "no data yet".into()),
            };
            // The loop may have stopped; nothing to do then.
            let _ = tx.blocking_send(Done {
                output,
                elapsed_ms: t0.elapsed().as_millis() as u64,
            });
        });
        if !queued {
            warn!(
                waiting = self.job_pool.waiting(),
                "job queue full: a job was dropped (the peer judges without its result)"
            );
        }
    }

    fn on_tick(&mut self) -> anyhow::Result<()> {
        self.metrics
            .peers
            .set(self.swarm.connected_peers().count() as i64);
        self.net.tick(&mut self.swarm);
        self.input(Input::Tick, Reply::None)?;
        self.refresh_status();
        Ok(())
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> anyhow::Result<()> {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Peer(event)) => {
                match self.link.route(&mut self.swarm.behaviour_mut().peer, event) {
                    Routed::Input(input, reply) => self.input(input, reply)?,
                    Routed::Identified(peer, info) => {
                        if self.net.on_identify(&mut self.swarm, peer, &info) {
                            self.input(Input::PeerUp { peer, relay: true }, Reply::None)?;
                        }
                    }
                    Routed::Nothing => {}
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) => self
                .net
                .on_discovered(&mut self.swarm, peer, addresses.iter()),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                connection_id,
                ..
            } => {
                let Some(kept) =
                    self.net
                        .on_established(&mut self.swarm, peer_id, connection_id, &endpoint)
                else {
                    return Ok(());
                };
                if let Some(addr) = kept.remember {
                    let _ = self
                        .store
                        .remember_peer(&peer_id.to_string(), &addr.to_string());
                }
                self.input(
                    Input::PeerUp {
                        peer: peer_id,
                        relay: kept.relay,
                    },
                    Reply::None,
                )?;
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                peer_id,
                num_established,
                ..
            } => {
                self.net.on_closed(connection_id, peer_id, num_established);
                if num_established == 0 {
                    self.input(Input::PeerDown { peer: peer_id }, Reply::None)?;
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = tabswarm_net::with_peer(address, *self.swarm.local_peer_id());
                info!(address = %full, "listening");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => debug!(%address, "external address"),
            _ => {}
        }
        Ok(())
    }

    /// The job pool's queue and threads, beside the peer's buffers.
    fn job_queues(&self) -> [Queue; 2] {
        [
            Queue {
                name: "jobs_waiting",
                len: self.job_pool.waiting(),
                bound: Some(crate::job_pool::MAX_WAITING),
            },
            Queue {
                name: "jobs_running",
                len: self.job_pool.running(),
                bound: Some(self.job_pool.threads()),
            },
        ]
    }

    pub(crate) fn refresh_status(&mut self) {
        let swarm = &self.swarm;
        let gossip = &swarm.behaviour().peer.gossipsub;
        let (direct, relayed) = self.net.peers_by_path();
        let view = NetView {
            peers: swarm.connected_peers().count(),
            listen: swarm
                .listeners()
                .map(|a| tabswarm_net::with_peer(a.clone(), *swarm.local_peer_id()).to_string())
                .collect(),
            direct,
            relayed,
            penalised: swarm
                .connected_peers()
                .filter_map(|p| {
                    let score = gossip.peer_score(p).filter(|s| *s < 0.0)?;
                    Some((p.to_string(), score))
                })
                .collect(),
        };
        if let Ok(mut status) = self.status.lock() {
            let snapshot = self.peer.snapshot();
            if snapshot.height != status.height || status.credits.is_empty() {
                status.credits = self
                    .peer
                    .ledger()
                    .credits()
                    .iter()
                    .map(|(address, credit)| (hex(address), *credit))
                    .collect();
            }
            let mut queues = self.peer.queues();
            queues.extend(self.job_queues());
            observe::update_status(&mut status, snapshot, queues, view, &self.metrics);
        }
    }
}

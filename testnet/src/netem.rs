//! Latency and loss between hosts, in userspace: each host's outgoing packets to the other
//! hosts go through an NFQUEUE (iptables), and a thread of this process, inside that host's
//! namespace, holds each one for the delay and drops a share of them. `tc netem` does this in
//! the kernel, but kernels built without `sch_netem` (this project's CI machines) have no
//! such qdisc and no nftables `queue` either; the xtables NFQUEUE target and
//! `nfnetlink_queue` they do have.
//!
//! Packets leave in the order they arrived (one fixed delay), so the delay adds no
//! reordering of its own; a packet the thread has not released yet when it stops is let
//! through (`--queue-bypass` for packets arriving after it stops).

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nfq::{Queue, Verdict};

/// The queue every host uses (queues are per namespace).
pub(crate) const QUEUE: u16 = 0;
/// Packets held at once before the kernel lets more through unqueued (fail-open): a bound on
/// this thread's memory, far above what a test's traffic keeps in flight.
const MAX_HELD: u32 = 20_000;

/// Delay and loss applied to packets one host sends to the others.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Impairment {
    /// Added to every packet, one way (a round trip gets it twice).
    pub delay: Duration,
    /// Packets dropped, per mille of those sent.
    pub loss_per_mille: u32,
}

/// One host's queue thread; stops (and releases what it holds) when dropped.
#[derive(Debug)]
pub(crate) struct Shaper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    /// Packets seen and dropped, for the report.
    pub(crate) seen: Arc<AtomicU64>,
    pub(crate) dropped: Arc<AtomicU64>,
}

impl Shaper {
    /// Starts shaping in namespace `ns` (by name, under `/var/run/netns`), with the random
    /// drops drawn from `seed`. Returns once the queue is bound, so no packet escapes the
    /// rule added next.
    pub(crate) fn start(ns: &str, impairment: Impairment, seed: u64) -> anyhow::Result<Self> {
        let path = format!("/var/run/netns/{ns}");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, seen, dropped) = (stop.clone(), seen.clone(), dropped.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let bound = (|| -> anyhow::Result<Queue> {
                    let file =
                        std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                    // Only this thread moves: the namespace is per thread.
                    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("entering {path}"))?;
                    let mut queue = Queue::open().context("opening an NFQUEUE socket")?;
                    queue.bind(QUEUE).context("binding queue 0")?;
                    queue.set_fail_open(QUEUE, true)?;
                    queue.set_queue_max_len(QUEUE, MAX_HELD)?;
                    // Only the verdict matters, not the bytes.
                    queue.set_copy_range(QUEUE, 0)?;
                    queue.set_nonblocking(true);
                    Ok(queue)
                })();
                let mut queue = match bound {
                    Ok(q) => {
                        let _ = ready_tx.send(Ok(()));
                        q
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                let mut rng = seed | 1;
                let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut idle = true;
                    match queue.recv() {
                        Ok(mut msg) => {
                            idle = false;
                            seen.fetch_add(1, Ordering::Relaxed);
                            // xorshift64: cheap, and reproducible from the seed.
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            if (rng % 1000) < u64::from(impairment.loss_per_mille) {
                                dropped.fetch_add(1, Ordering::Relaxed);
                                msg.set_verdict(Verdict::Drop);
                                queue.verdict(msg)?;
                            } else {
                                held.push_back((Instant::now() + impairment.delay, msg));
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e).context("reading the queue"),
                    }
                    while held.front().is_some_and(|(due, _)| *due <= Instant::now()) {
                        let (_, mut msg) = held.pop_front().expect("checked");
                        msg.set_verdict(Verdict::Accept);
                        queue.verdict(msg)?;
                        idle = false;
                    }
                    if idle {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                for (_, mut msg) in held {
                    msg.set_verdict(Verdict::Accept);
                    queue.verdict(msg)?;
                }
                Ok(())
            })
        };
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Self {
                stop,
                thread: Some(thread),
                seen,
                dropped,
            }),
            Ok(Err(e)) => bail!("shaping {ns}: {e}"),
            Err(_) => bail!("shaping {ns}: the queue thread did not start in 5 s"),
        }
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! Runs the peer's jobs (training, scoring, testing) off the event loop, at most `threads`
//! at a time: scores first, then training, then test evaluations, each kind in the order the
//! peer asked for it.
//!
//! A validator of a busy run is asked to score every update of a height at once: thirty
//! jobs, each evaluating its own copy of the parameters. Run all at once on the blocking
//! pool they only share the same cores, finish together (so every score is late), and each
//! thread keeps its own allocator arena: memory grows with the busiest height ever seen.
//! Queued behind a few threads, the first scores are in early and memory stays flat. Scores
//! go first because a proposal waits for them (the chain does), while the node's own
//! training and its test figures only wait for themselves.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

/// Threads a node gives its jobs unless told otherwise: one per core.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Jobs that wait for a thread before new ones are refused. The peer asks for each score
/// once a height and a trainer for one job at a time, so a validator waits for a height's
/// updates (a pool holds a few hundred) plus a test; only a flood the peer's own bounds let
/// through reaches this.
pub(crate) const MAX_WAITING: usize = 1024;

/// What a job is for, which decides who goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Validation scores: a proposal, and so the chain, waits for them.
    Score = 0,
    /// The node's own local training.
    Train = 1,
    /// Test figures for the status page and metrics.
    Test = 2,
}

type Work = Box<dyn FnOnce() + Send + 'static>;

/// Jobs waiting, one FIFO queue per lane.
#[derive(Default)]
struct Lanes {
    queues: Mutex<[VecDeque<Work>; 3]>,
    /// Woken when a job is queued or the pool goes away.
    queued: Notify,
    closed: AtomicBool,
}

impl Lanes {
    fn queues(&self) -> std::sync::MutexGuard<'_, [VecDeque<Work>; 3]> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pop(&self) -> Option<Work> {
        self.queues().iter_mut().find_map(VecDeque::pop_front)
    }

    fn len(&self) -> usize {
        self.queues().iter().map(VecDeque::len).sum()
    }
}

/// A pool of `threads` job threads. Needs a tokio runtime: one task hands queued jobs to
/// blocking threads as slots free up.
pub(crate) struct JobPool {
    lanes: Arc<Lanes>,
    threads: usize,
    running: Arc<AtomicUsize>,
}

impl std::fmt::Debug for JobPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobPool")
            .field("threads", &self.threads)
            .field("waiting", &self.waiting())
            .field("running", &self.running())
            .finish()
    }
}

/// Counts a job as running for as long as it lives, panics included.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl JobPool {
    pub(crate) fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let lanes = Arc::new(Lanes::default());
        let running = Arc::new(AtomicUsize::new(0));
        let slots = Arc::new(Semaphore::new(threads));
        let (l, r) = (lanes.clone(), running.clone());
        tokio::spawn(async move {
            loop {
                // A free thread first, then the most urgent job: one queued while we waited
                // for the thread still gets its turn by lane.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let work = loop {
                    if l.closed.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some(work) = l.pop() {
                        break work;
                    }
                    // `notify_one` keeps a wake-up for a job queued before we wait.
                    l.queued.notified().await;
                };
                r.fetch_add(1, Ordering::Relaxed);
                let running = Running(r.clone());
                tokio::task::spawn_blocking(move || {
                    // Both go when the job ends or panics: the thread is free for the next.
                    let _slot = slot;
                    let _running = running;
                    work();
                });
            }
        });
        Self {
            lanes,
            threads,
            running,
        }
    }

    /// Queues `work` (which hands its result back itself) in `lane`; it runs once a thread
    /// is free and no more urgent job waits. With [`MAX_WAITING`] jobs waiting, `work` is
    /// dropped and `false` returned: the peer judges without a score that never comes, as it
    /// does for a lost one.
    #[must_use]
    pub(crate) fn spawn(&self, lane: Lane, work: impl FnOnce() + Send + 'static) -> bool {
        {
            let mut queues = self.lanes.queues();
            if queues.iter().map(VecDeque::len).sum::<usize>() >= MAX_WAITING {
                return false;
            }
            queues[lane as usize].push_back(Box::new(work));
        }
        self.lanes.queued.notify_one();
        true
    }

    /// Jobs waiting for a thread.
    pub(crate) fn waiting(&self) -> usize {
        self.lanes.len()
    }

    /// Jobs running now (at most [`Self::threads`]).
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    pub(crate) fn threads(&self) -> usize {
        self.threads
    }
}

impl Drop for JobPool {
    fn drop(&mut self) {
        self.lanes.closed.store(true, Ordering::Relaxed);
        self.lanes.queued.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// A pool of one thread, held by a job in `lane` until `release` is sent to (or
    /// dropped).
    async fn busy_pool(lane: Lane) -> (JobPool, std::sync::mpsc::Sender<()>) {
        let pool = JobPool::new(1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        assert!(pool.spawn(lane, move || {
            let _ = wait.recv();
        }));
        until("the first job to run", || pool.running() == 1).await;
        (pool, release)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_jobs_run_at_once_than_the_pool_has_threads_and_they_start_in_order() {
        let pool = JobPool::new(2);
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        for i in 0..12usize {
            let (now, most, started, tx) = (now.clone(), most.clone(), started.clone(), tx.clone());
            let queued = pool.spawn(Lane::Score, move || {
                started.lock().unwrap().push(i);
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                now.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.blocking_send(i);
            });
            assert!(queued);
        }
        assert!(pool.waiting() + pool.running() > 2, "the jobs were queued");
        let mut finished = Vec::new();
        for _ in 0..12 {
            let i = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("every job finishes")
                .unwrap();
            finished.push(i);
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "more jobs ran at once than threads"
        );
        finished.sort();
        assert_eq!(finished, (0..12).collect::<Vec<_>>());
        // Two threads: job i+2 cannot start before job i has; the order is the peer's, give
        // or take the two that start together.
        let started = started.lock().unwrap().clone();
        for (k, &i) in started.iter().enumerate() {
            assert!(i.abs_diff(k) <= 1, "jobs started out of order: {started:?}");
        }
        until("the pool to drain", || pool.waiting() + pool.running() == 0).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scores_overtake_training_and_tests_that_wait() {
        let (pool, release) = busy_pool(Lane::Train).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        for (lane, name) in [
            (Lane::Test, "test"),
            (Lane::Train, "train"),
            (Lane::Score, "score 1"),
            (Lane::Score, "score 2"),
        ] {
            let order = order.clone();
            assert!(pool.spawn(lane, move || order.lock().unwrap().push(name)));
        }
        release.send(()).unwrap();
        until("every job to run", || order.lock().unwrap().len() == 4).await;
        assert_eq!(
            *order.lock().unwrap(),
            vec!["score 1", "score 2", "train", "test"]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_new_jobs_instead_of_growing() {
        let (pool, release) = busy_pool(Lane::Score).await;
        let queued = (0..MAX_WAITING + 10)
            .filter(|i| pool.spawn(if i % 2 == 0 { Lane::Score } else { Lane::Test }, || {}))
            .count();
        assert_eq!(queued, MAX_WAITING, "jobs queued behind a busy thread");
        assert_eq!(pool.waiting(), MAX_WAITING);
        release.send(()).unwrap();
        until("the queue to drain", || {
            pool.waiting() + pool.running() == 0
        })
        .await;
        assert!(
            pool.spawn(Lane::Score, || {}),
            "a drained queue takes jobs again"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_panics_frees_its_thread() {
        let pool = JobPool::new(1);
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        assert!(pool.spawn(Lane::Train, || panic!("a broken job")));
        assert!(pool.spawn(Lane::Train, move || {
            let _ = tx.blocking_send(7u32);
        }));
        let v = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(v.expect("the next job ran"), Some(7));
    }
}

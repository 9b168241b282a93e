//! Runs the peer's jobs (training, scoring, testing) off the event loop, at most `threads`
//! at a time, in the order the peer asked for them.
//!
//! A validator of a busy run is asked to score every update of a height at once: thirty
//! jobs, each evaluating its own copy of the parameters. Run all at once on the blocking
//! pool they only share the same cores, finish together (so every score is late), and each
//! thread keeps its own allocator arena: memory grows with the busiest height ever seen.
//! Queued behind a few threads, the first scores are in early and memory stays flat.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, mpsc};

/// Threads a node gives its jobs unless told otherwise: one per core.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Jobs that wait for a thread before new ones are refused. The peer asks for each score
/// once a height and a trainer for one job at a time, so a validator waits for a height's
/// updates (a pool holds a few hundred) plus a test; only a flood the peer's own bounds let
/// through reaches this.
pub(crate) const MAX_WAITING: usize = 1024;

type Work = Box<dyn FnOnce() + Send + 'static>;

/// A FIFO pool of `threads` job threads. Needs a tokio runtime: one task hands queued jobs
/// to blocking threads as slots free up, in the order they were given.
#[derive(Debug)]
pub(crate) struct JobPool {
    queue: mpsc::Sender<Work>,
    threads: usize,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
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
        let (queue, mut jobs) = mpsc::channel::<Work>(MAX_WAITING);
        let waiting = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let slots = Arc::new(Semaphore::new(threads));
        let (w, r) = (waiting.clone(), running.clone());
        tokio::spawn(async move {
            while let Some(work) = jobs.recv().await {
                // The semaphore is never closed.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                w.fetch_sub(1, Ordering::Relaxed);
                r.fetch_add(1, Ordering::Relaxed);
                let running = Running(r.clone());
                tokio::task::spawn_blocking(move || {
                    // Both go when the job ends or panics: the slot is free for the next.
                    let _slot = slot;
                    let _running = running;
                    work();
                });
            }
        });
        Self {
            queue,
            threads,
            waiting,
            running,
        }
    }

    /// Queues `work` (which hands its result back itself); it runs once a slot is free.
    /// With [`MAX_WAITING`] jobs waiting, `work` is dropped and `false` returned: the peer
    /// judges without a score that never comes, as it does for a lost one.
    #[must_use]
    pub(crate) fn spawn(&self, work: impl FnOnce() + Send + 'static) -> bool {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let queued = self.queue.try_send(Box::new(work)).is_ok();
        if !queued {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        queued
    }

    /// Jobs waiting for a slot.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Jobs running now (at most [`Self::threads`]).
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    pub(crate) fn threads(&self) -> usize {
        self.threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_jobs_run_at_once_than_the_pool_has_threads_and_they_start_in_order() {
        let pool = JobPool::new(2);
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = mpsc::channel(64);
        for i in 0..12usize {
            let (now, most, started, tx) = (now.clone(), most.clone(), started.clone(), tx.clone());
            let queued = pool.spawn(move || {
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
        // Two slots: job i+2 cannot start before job i has; the order is the peer's, give or
        // take the two that start together.
        let started = started.lock().unwrap().clone();
        for (k, &i) in started.iter().enumerate() {
            assert!(i.abs_diff(k) <= 1, "jobs started out of order: {started:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!((pool.waiting(), pool.running()), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_new_jobs_instead_of_growing() {
        let pool = JobPool::new(1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        // One job holds the only thread until released; the queue then fills to its bound.
        let hold = wait.clone();
        assert!(pool.spawn(move || {
            let _ = hold.lock().unwrap().recv();
        }));
        for _ in 0..500 {
            if pool.running() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.running(), 1);
        let mut queued = 0;
        for _ in 0..MAX_WAITING + 10 {
            queued += usize::from(pool.spawn(|| {}));
        }
        assert!(
            (MAX_WAITING..=MAX_WAITING + 1).contains(&queued),
            "{queued} jobs queued behind a busy thread (bound {MAX_WAITING})"
        );
        assert!(pool.waiting() <= MAX_WAITING + 1);
        release.send(()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_panics_frees_its_slot() {
        let pool = JobPool::new(1);
        let (tx, mut rx) = mpsc::channel(4);
        assert!(pool.spawn(|| panic!("a broken job")));
        assert!(pool.spawn(move || {
            let _ = tx.blocking_send(7u32);
        }));
        let v = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(v.expect("the next job ran"), Some(7));
    }
}

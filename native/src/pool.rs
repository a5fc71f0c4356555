//! Worker threads for CPU-bound jobs (hashing, compression, the blob codec, chunk stores): one
//! per core, below normal scheduling priority.
//!
//! Why not libuv's pool: its four threads serve every job in one FIFO queue, so a batch read of
//! small files waited behind chunks being compressed while the JS thread waited for the read,
//! and four compressing threads on two cores left the JS thread (the one that feeds them) a
//! fraction of a core. Here CPU jobs take at most one thread per core, I/O jobs keep libuv's
//! pool to themselves, and a worker yields to the threads that feed it (nice +WORKER_NICE): a
//! full backup of the linux tree into a datastore on tmpfs went from 3.4-3.5 s to 2.9-3.0 s on
//! two cores.

use std::collections::VecDeque;
use std::os::raw::c_int;
use std::sync::{Condvar, Mutex, OnceLock};

pub type Task = Box<dyn FnOnce() + Send + 'static>;

struct Pool {
    queue: Mutex<VecDeque<Task>>,
    ready: Condvar,
}

/// How much nicer a worker is than the thread that started the pool (at most 19).
const WORKER_NICE: c_int = 5;

static POOL: OnceLock<&'static Pool> = OnceLock::new();

/// Number of workers: the cores this process may run on.
pub fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 64)
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let p: &'static Pool = Box::leak(Box::new(Pool { queue: Mutex::new(VecDeque::new()), ready: Condvar::new() }));
        for i in 0..threads() {
            std::thread::Builder::new()
                .name(format!("pxb-cpu-{}", i))
                .spawn(move || worker(p))
                .expect("cannot start a pxb worker thread");
        }
        p
    })
}

/// Run `task` on a worker, after the tasks submitted before it.
pub fn submit(task: Task) {
    let p = pool();
    p.queue.lock().unwrap_or_else(|e| e.into_inner()).push_back(task);
    p.ready.notify_one();
}

/// The nice value a worker takes: WORKER_NICE above its own (inherited from the thread that
/// started the pool, so a `nice -n 10 pxb …` gets workers at 15, never at a higher priority).
pub fn worker_nice(inherited: c_int) -> c_int {
    (inherited + WORKER_NICE).min(19)
}

/// Take the calling thread's priority down to a worker's (worker_nice); a failure only leaves
/// the priority as it was.
pub fn yield_to_creator() {
    if let Ok(n) = crate::fs::sys::thread_nice() {
        let _ = crate::fs::sys::set_thread_nice(worker_nice(n));
    }
}

fn worker(p: &'static Pool) {
    yield_to_creator();
    loop {
        let task = {
            let mut q = p.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(t) = q.pop_front() {
                    break t;
                }
                q = p.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        // Tasks catch their own panics (napi::rt::spawn_job); never let one end the worker.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_every_task_on_named_workers() {
        let (tx, rx) = mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            submit(Box::new(move || tx.send((i, std::thread::current().name().map(String::from))).unwrap()));
        }
        let mut seen: Vec<_> = (0..100).map(|_| rx.recv().unwrap()).collect();
        seen.sort();
        assert_eq!(seen.iter().map(|x| x.0).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
        assert!(seen.iter().all(|x| x.1.as_deref().unwrap_or("").starts_with("pxb-cpu-")));
    }

    #[test]
    fn workers_are_nicer_than_their_creator_never_less_nice() {
        assert_eq!(worker_nice(0), 5);
        assert_eq!(worker_nice(10), 15);
        assert_eq!(worker_nice(17), 19);
        assert_eq!(worker_nice(-5), 0);
    }

    #[test]
    fn a_panicking_task_leaves_the_workers_running() {
        for _ in 0..threads() * 2 {
            submit(Box::new(|| panic!("boom")));
        }
        let (tx, rx) = mpsc::channel();
        submit(Box::new(move || tx.send(1).unwrap()));
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap(), 1);
    }
}

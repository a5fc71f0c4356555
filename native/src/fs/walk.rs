//! The backup walk's directory listings, ahead of the encoder and off the JS thread.
//!
//! A `Walker` lists a tree in DFS preorder (the order the encoder takes directories in) on
//! threads of its own, keeping at most `lookahead` listings done-but-undelivered or in progress,
//! and starting none while the undelivered ones hold `lookahead_bytes` (wide directories: a
//! listing costs ~200 bytes per entry; listings in progress count once done, so each thread
//! may overshoot the bound by one listing).
//! The caller takes listings by node id (`poll`), synchronously: a listing that is ready costs
//! no thread wake-up and no job; only a caller that has to wait (`want`) is notified. Each
//! listing is `dir::read_dir`'s layout plus, per entry, the node id of the subdirectory the walk
//! descends into (-1 for none). It descends into directories that were stat'ed without error
//! and are on an allowed device (all of them with `devs: None`); the caller abandons subtrees
//! it will not enter (`drop`), so memory is bounded by the lookahead and the current path.
//!
//! Which directories exist and in what order is the walk's business only; excludes and the
//! rest of the policy stay with the caller, which drops what it does not descend into.
use super::dir::{self, MetaOpts};
use super::error::FsError;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ffi::CString;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A finished listing: the layout bytes (or why the directory could not be listed) and the
/// child node id per entry (-1: not descended into).
pub type Listing = (Result<Vec<u8>, FsError>, Vec<i32>);

enum State {
    Queued,
    Running,
    Ready(Listing),
}

struct Node {
    path: CString,
    /// Child indexes from the root: their lexicographic order is DFS preorder.
    key: Vec<u32>,
    state: State,
    dropped: bool,
    /// The caller waits for this node: notify it when ready.
    wanted: bool,
}

struct Inner {
    nodes: HashMap<u32, Node>,
    frontier: BinaryHeap<Reverse<(Vec<u32>, u32)>>,
    /// Wanted nodes still queued (served before the frontier, past the lookahead).
    urgent: Vec<u32>,
    next_id: u32,
    /// Listings in progress or ready but not delivered.
    outstanding: usize,
    /// Bytes of the ready, undelivered listings.
    ready_bytes: usize,
    /// Workers waiting for work.
    sleeping: usize,
    closed: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    cv: Condvar,
    opts: MetaOpts,
    /// The bucket index of `opts.unchanged` (its lookups read it).
    _index: Vec<u32>,
    devs: Option<Vec<u64>>,
    lookahead: usize,
    lookahead_bytes: usize,
    notify: Box<dyn Fn(u32) + Send + Sync>,
}

pub struct Walker {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Walker {
    /// Start listing at `root` (node id 0). A metadata-cache table in `opts.unchanged` must stay
    /// valid and unchanged until `close()` returns. `notify(id)` is called from a walker thread
    /// when a node the caller `want`s is ready.
    pub fn new(
        root: CString,
        opts: MetaOpts,
        devs: Option<Vec<u64>>,
        lookahead: usize,
        lookahead_bytes: usize,
        threads: usize,
        notify: Box<dyn Fn(u32) + Send + Sync>,
    ) -> Walker {
        // (every listed entry is looked up in the table: index it)
        let (index, opts) = match opts.unchanged {
            Some(t) => {
                let (index, bits) = t.build_index();
                let t = t.with_index(&index, bits);
                (index, MetaOpts { unchanged: Some(t), ..opts })
            }
            None => (Vec::new(), opts),
        };
        let mut inner = Inner { nodes: HashMap::new(), frontier: BinaryHeap::new(), urgent: Vec::new(), next_id: 1, outstanding: 0, ready_bytes: 0, sleeping: 0, closed: false };
        inner.nodes.insert(0, Node { path: root, key: Vec::new(), state: State::Queued, dropped: false, wanted: false });
        inner.frontier.push(Reverse((Vec::new(), 0)));
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            cv: Condvar::new(),
            opts,
            _index: index,
            devs,
            lookahead: lookahead.max(1),
            lookahead_bytes: lookahead_bytes.max(1),
            notify,
        });
        let threads = (0..threads.max(1))
            .map(|k| {
                let s = shared.clone();
                std::thread::Builder::new().name(format!("pxb-walk-{}", k)).spawn(move || worker(&s)).expect("cannot start a walker thread")
            })
            .collect();
        Walker { shared, threads }
    }

    /// The listing of node `id` if it is ready (delivered once: the node is forgotten), else
    /// None. Unknown ids (delivered, dropped) are an error.
    pub fn poll(&self, id: u32) -> Result<Option<Listing>, String> {
        let mut g = self.shared.inner.lock().unwrap();
        match g.nodes.get(&id) {
            None => Err(format!("walk node {} is not pending", id)),
            Some(n) if n.dropped => Err(format!("walk node {} was dropped", id)),
            Some(Node { state: State::Ready(_), .. }) => {
                let n = g.nodes.remove(&id).unwrap();
                let bytes = listing_bytes(&n.state);
                g.outstanding -= 1;
                g.ready_bytes -= bytes;
                // Waking a thread costs the caller far more than the poll itself: sleeping
                // workers are woken once the lookahead has drained to three quarters (of its
                // listings or of its bytes).
                let sh = &self.shared;
                let low_bytes = sh.lookahead_bytes - sh.lookahead_bytes / 4;
                let wake = g.sleeping > 0
                    && (g.outstanding == sh.lookahead - (sh.lookahead / 4).max(1) || (g.ready_bytes < low_bytes && g.ready_bytes + bytes >= low_bytes));
                drop(g);
                if wake {
                    self.shared.cv.notify_all();
                }
                match n.state {
                    State::Ready(l) => Ok(Some(l)),
                    _ => unreachable!(),
                }
            }
            Some(_) => Ok(None),
        }
    }

    /// The caller waits for node `id`: `notify(id)` once it is ready (true), or it is ready
    /// already (false: poll it). A queued node is listed next, past the lookahead.
    pub fn want(&self, id: u32) -> Result<bool, String> {
        let mut g = self.shared.inner.lock().unwrap();
        let n = match g.nodes.get_mut(&id) {
            None => return Err(format!("walk node {} is not pending", id)),
            Some(n) if n.dropped => return Err(format!("walk node {} was dropped", id)),
            Some(n) => n,
        };
        match n.state {
            State::Ready(_) => Ok(false),
            State::Running => {
                n.wanted = true;
                Ok(true)
            }
            State::Queued => {
                n.wanted = true;
                g.urgent.push(id);
                drop(g);
                self.shared.cv.notify_one();
                Ok(true)
            }
        }
    }

    /// Abandon nodes and their subtrees (the caller will not take them).
    pub fn drop_nodes(&self, ids: &[u32]) {
        let mut g = self.shared.inner.lock().unwrap();
        let mut stack: Vec<u32> = ids.to_vec();
        while let Some(id) = stack.pop() {
            let Some(n) = g.nodes.get_mut(&id) else { continue };
            if n.dropped {
                continue;
            }
            n.dropped = true;
            match n.state {
                // popped from the frontier later and skipped, or forgotten when its listing is done
                State::Queued | State::Running => {}
                State::Ready(_) => {
                    let n = g.nodes.remove(&id).unwrap();
                    g.outstanding -= 1;
                    g.ready_bytes -= listing_bytes(&n.state);
                    if let State::Ready((_, kids)) = n.state {
                        stack.extend(kids.into_iter().filter(|&k| k >= 0).map(|k| k as u32));
                    }
                }
            }
        }
        drop(g);
        self.shared.cv.notify_all();
    }

    /// Nodes known to the walk (pending, running, ready, dropped-but-running): for tests.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.shared.inner.lock().unwrap().nodes.len()
    }

    /// Listings in progress or ready but undelivered, and the bytes of the ready ones: for tests.
    #[cfg(test)]
    fn outstanding(&self) -> (usize, usize) {
        let g = self.shared.inner.lock().unwrap();
        (g.outstanding, g.ready_bytes)
    }

    /// Stop the threads (after the listings they are making) and forget everything.
    pub fn close(&mut self) {
        self.shared.inner.lock().unwrap().closed = true;
        self.shared.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut g = self.shared.inner.lock().unwrap();
        g.nodes.clear();
        g.frontier.clear();
        g.urgent.clear();
        drop(g);
        if let Some(owner) = self.shared.opts.hold {
            super::held::release(owner);
        }
    }
}

impl Drop for Walker {
    fn drop(&mut self) {
        self.close();
    }
}

fn worker(s: &Shared) {
    // Listings are made ahead of the JavaScript thread that consumes them: on a busy machine
    // it goes first, as it does before the CPU workers (linux tree, 2 vCPUs, alternating: full
    // backup 2.79 s median against 2.82 and 2.98 against 3.11 in two series; first no-change
    // equal).
    crate::pool::yield_to_creator();
    loop {
        let (id, path) = {
            let mut g = s.inner.lock().unwrap();
            loop {
                if g.closed {
                    return;
                }
                if let Some(id) = next_node(&mut g, s.lookahead, s.lookahead_bytes) {
                    let n = g.nodes.get_mut(&id).unwrap();
                    n.state = State::Running;
                    let path = n.path.clone();
                    g.outstanding += 1;
                    break (id, path);
                }
                g.sleeping += 1;
                g = s.cv.wait(g).unwrap();
                g.sleeping -= 1;
            }
        };
        let listing = dir::read_dir(&path, &s.opts);
        let layout = listing.as_ref().ok().map(|b| dir::Layout::new(b));
        let subdirs = layout.as_ref().map(|l| subdirectories(l, s.devs.as_deref())).unwrap_or_default();
        let mut g = s.inner.lock().unwrap();
        let n = g.nodes.get_mut(&id).unwrap();
        if n.dropped {
            g.nodes.remove(&id);
            g.outstanding -= 1;
            continue;
        }
        let key = n.key.clone();
        let wanted = n.wanted;
        let mut kids = vec![-1i32; layout.as_ref().map_or(0, |l| l.count())];
        for (i, name) in subdirs {
            let cid = g.next_id;
            g.next_id = g.next_id.wrapping_add(1);
            let mut p = path.as_bytes().to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            let mut ck = key.clone();
            ck.push(i as u32);
            // names come from getdents: never NUL
            let cpath = CString::new(p).unwrap_or_default();
            g.nodes.insert(cid, Node { path: cpath, key: ck.clone(), state: State::Queued, dropped: false, wanted: false });
            g.frontier.push(Reverse((ck, cid)));
            kids[i] = cid as i32;
        }
        g.ready_bytes += listing.as_ref().map_or(0, |b| b.len());
        g.nodes.get_mut(&id).unwrap().state = State::Ready((listing, kids));
        // another worker may be waiting for the subdirectories just found
        let wake = g.sleeping > 0 && !g.frontier.is_empty() && g.outstanding < s.lookahead && g.ready_bytes < s.lookahead_bytes;
        drop(g);
        if wake {
            s.cv.notify_one();
        }
        if wanted {
            (s.notify)(id);
        }
    }
}

/// Bytes a ready listing holds (what `ready_bytes` counts).
fn listing_bytes(s: &State) -> usize {
    match s {
        State::Ready((Ok(b), _)) => b.len(),
        _ => 0,
    }
}

/// The next node to list: a wanted one first, else the earliest in preorder while the
/// lookahead has room. Dropped and no longer queued nodes are skipped (and forgotten).
fn next_node(g: &mut Inner, lookahead: usize, lookahead_bytes: usize) -> Option<u32> {
    while let Some(id) = g.urgent.pop() {
        if matches!(g.nodes.get(&id), Some(Node { state: State::Queued, dropped: false, .. })) {
            return Some(id);
        }
    }
    while g.outstanding < lookahead && g.ready_bytes < lookahead_bytes {
        let Reverse((_, id)) = g.frontier.pop()?;
        match g.nodes.get(&id) {
            Some(Node { state: State::Queued, dropped: false, .. }) => return Some(id),
            Some(Node { state: State::Queued, dropped: true, .. }) => {
                g.nodes.remove(&id);
            }
            _ => {}
        }
    }
    None
}

/// (entry index, name) of the entries to descend into: directories stat'ed without error on
/// an allowed device.
fn subdirectories<'a>(l: &dir::Layout<'a>, devs: Option<&[u64]>) -> Vec<(usize, &'a [u8])> {
    (0..l.count())
        .filter(|&i| l.num(i, dir::F_STATUS) == 0.0 && (l.num(i, dir::F_MODE) as u32) & 0o170000 == 0o040000)
        .filter(|&i| devs.map_or(true, |d| d.contains(&l.dev(i))))
        .map(|i| (i, l.name(i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn names(l: &Listing) -> Vec<Vec<u8>> {
        let v = dir::Layout::new(l.0.as_ref().unwrap());
        (0..v.count()).map(|i| v.name(i).to_vec()).collect()
    }

    /// Take `id`, waiting for its notification when it is not ready yet.
    fn take(w: &Walker, rx: &mpsc::Receiver<u32>, id: u32) -> Listing {
        loop {
            if let Some(l) = w.poll(id).unwrap() {
                return l;
            }
            if w.want(id).unwrap() {
                while rx.recv().unwrap() != id {}
            }
        }
    }

    #[test]
    fn walks_in_preorder_past_the_lookahead_and_forgets_dropped_subtrees() {
        let dir = crate::fs::testing::fresh_dir("walk");
        for d in ["a/x/deep", "a/y", "b", "c/z"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("a/file"), b"f").unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let root = CString::new(dir.to_str().unwrap()).unwrap();
        let w = Walker::new(root, MetaOpts::default(), None, 1, 1 << 20, 2, Box::new(move |id| tx.lock().unwrap().send(id).unwrap()));
        let top = take(&w, &rx, 0);
        assert_eq!(names(&top), [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        let [a, b, c] = [top.1[0] as u32, top.1[1] as u32, top.1[2] as u32];
        let la = take(&w, &rx, a);
        assert_eq!(names(&la), [b"file".to_vec(), b"x".to_vec(), b"y".to_vec()]);
        assert_eq!(la.1[0], -1, "a file is not descended into");
        // c is taken before b (out of preorder) and a's subtree is abandoned.
        w.drop_nodes(&[la.1[1] as u32, la.1[2] as u32]);
        let lc = take(&w, &rx, c);
        assert_eq!(names(&lc), [b"z".to_vec()]);
        assert_eq!(names(&take(&w, &rx, b)).len(), 0);
        w.drop_nodes(&[lc.1[0] as u32]);
        for _ in 0..200 {
            if w.pending() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(w.pending(), 0, "dropped and delivered nodes are forgotten");
        assert!(w.poll(a).is_err());
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_bytes_of_undelivered_listings_bound_the_walk() {
        let dir = crate::fs::testing::fresh_dir("walk-bytes");
        for d in ["a", "b", "c", "d"] {
            std::fs::create_dir(dir.join(d)).unwrap();
            for f in 0..50 {
                std::fs::write(dir.join(d).join(format!("file-{}", f)), b"x").unwrap();
            }
        }
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let root = CString::new(dir.to_str().unwrap()).unwrap();
        // Room for 100 listings, but only one listing's bytes: one is made ahead at a time (one
        // thread: two could each start one before either is done and counted).
        let w = Walker::new(root, MetaOpts::default(), None, 100, 1, 1, Box::new(move |id| tx.lock().unwrap().send(id).unwrap()));
        let top = take(&w, &rx, 0);
        let settle = |w: &Walker| {
            let mut last = w.outstanding();
            for _ in 0..20 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                let now = w.outstanding();
                if now == last && now.0 > 0 {
                    break;
                }
                last = now;
            }
            last
        };
        let (n, bytes) = settle(&w);
        assert_eq!(n, 1, "one listing ahead, not four");
        assert!(bytes > 50 * 100, "it holds its 50 entries ({} bytes)", bytes);
        for k in 0..4 {
            assert_eq!(names(&take(&w, &rx, top.1[k] as u32)).len(), 50);
        }
        assert_eq!(w.outstanding(), (0, 0));
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unlistable_directory_gets_its_error_and_other_devices_are_not_entered() {
        let dir = crate::fs::testing::fresh_dir("walk-dev");
        std::fs::create_dir_all(dir.join("d/e")).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let root = CString::new(dir.join("missing").to_str().unwrap()).unwrap();
        let w = Walker::new(root, MetaOpts::default(), None, 4, 1 << 20, 1, Box::new(move |id| tx.lock().unwrap().send(id).unwrap()));
        let l = take(&w, &rx, 0);
        assert_eq!(l.0.unwrap_err().errno, 2);
        drop(w);
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let root = CString::new(dir.to_str().unwrap()).unwrap();
        let w = Walker::new(root, MetaOpts::default(), Some(vec![u64::MAX]), 4, 1 << 20, 1, Box::new(move |id| tx.lock().unwrap().send(id).unwrap()));
        let l = take(&w, &rx, 0);
        assert_eq!(names(&l), [b"d".to_vec()]);
        assert_eq!(l.1, [-1], "a directory on another device is listed, not entered");
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

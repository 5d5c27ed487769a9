//! User-stack symbolization off the thread that drains the ring buffer.
//!
//! Symbolizing opens and parses files chosen by other users; whatever it
//! meets, the event path waits a bounded time: requests go through a
//! bounded queue to one worker thread, and an event whose frames are not
//! back within `MAX_WAIT` (`BUSY_WAIT` in a storm, and never once the ring
//! buffer is half full; or when waiting used up its share of the second,
//! or the queue is full) is written with raw addresses, counted.
//! The worker goes on and fills its caches, so the next event with those
//! frames is quick. A panic in the worker (a parser meeting a file it did
//! not expect) costs that event its symbols and a fresh symbolizer.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use super::cache::BoundedCache;
use super::frame;
use super::user::{Budget, UserFrames, UserSymbolizer};
use crate::collect::ringfill::RingFill;

/// Requests waiting for the worker.
const QUEUE: usize = 16;
/// Longest an event waits for its user frames.
const MAX_WAIT: Duration = Duration::from_millis(250);
/// Longest it waits while events come in batches (`UserWorker::set_busy`):
/// the ring buffer holds tens of milliseconds of a storm, and a drain
/// stalled for longer loses events.
const BUSY_WAIT: Duration = Duration::from_millis(5);
/// A wait looks at the ring buffer this often, and ends once it is this
/// full: past it, a longer stall would lose events.
const FILL_CHECK: Duration = Duration::from_millis(2);
const FILL_LIMIT: f64 = 0.5;
/// A stack answered less than this long ago is answered again from
/// `UserWorker::recent`, without a round trip to the worker (two thread
/// switches per event): no sooner would the worker look at the process's
/// maps again (`user::MAPS_REREAD`).
const REUSE_FOR: Duration = Duration::from_secs(1);
/// Stacks remembered for reuse (per generation of the cache).
const MAX_RECENT: usize = 1024;

struct Request {
    pid: u32,
    ips: Vec<u64>,
    top: Vec<u64>,
    /// Frames, and how many of them have no symbol.
    reply: SyncSender<(UserFrames, u64)>,
}

/// A stack the worker answered.
struct Recent {
    at: Instant,
    ips: Vec<u64>,
    /// The words at the stack pointer the answer depended on.
    top_read: Vec<(usize, u64)>,
    frames: Vec<String>,
    unsymbolized: u64,
}

pub(crate) struct UserWorker {
    requests: SyncSender<Request>,
    /// Time the event path spent waiting, per second.
    waiting: Budget,
    /// Frames shown without a symbol, the worker's and ours.
    pub(crate) unsymbolized: u64,
    /// By (pid, hash of the addresses).
    recent: BoundedCache<(u32, u64), Recent>,
    /// Events are arriving in batches: wait `BUSY_WAIT`, not `MAX_WAIT`.
    busy: bool,
    /// The ring buffer's fill, where it can be read.
    fill: Option<RingFill>,
}

impl Default for UserWorker {
    fn default() -> Self {
        Self::spawn(None)
    }
}

impl UserWorker {
    /// `fill`: the ring buffer's gauge, which ends a wait early.
    pub(crate) fn spawn(fill: Option<RingFill>) -> UserWorker {
        let (requests, queue) = sync_channel(QUEUE);
        // If the thread cannot start, every request fails to send: raw frames.
        let _ = std::thread::Builder::new()
            .name("rsttrace-symbols".into())
            .spawn(move || serve(queue));
        UserWorker {
            requests,
            waiting: Budget::new(Instant::now()),
            unsymbolized: 0,
            recent: BoundedCache::new(MAX_RECENT),
            busy: false,
            fill,
        }
    }

    /// Whether events are arriving faster than one at a time (a storm).
    pub(crate) fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
    }

    /// The frames of `ips` in `pid` (see `UserSymbolizer::frames`), or raw
    /// addresses when they do not come in time.
    pub(crate) fn frames(&mut self, pid: u32, ips: &[u64], top: &[u64]) -> Vec<String> {
        let key = (pid, hash(ips));
        if let Some(r) = self.recent.get(&key)
            && r.at.elapsed() < REUSE_FOR
            && r.ips == ips
            && r.top_read
                .iter()
                .all(|&(slot, word)| top.get(slot) == Some(&word))
        {
            self.unsymbolized += r.unsymbolized;
            return r.frames.clone();
        }
        let started = Instant::now();
        if self.waiting.allows(started) {
            let (reply, answer) = sync_channel(1);
            let request = Request {
                pid,
                ips: ips.to_vec(),
                top: top.to_vec(),
                reply,
            };
            if self.requests.try_send(request).is_ok() {
                let got = self.wait(&answer, if self.busy { BUSY_WAIT } else { MAX_WAIT });
                self.waiting.charge(started.elapsed());
                if let Ok((answer, unsymbolized)) = got {
                    self.unsymbolized += unsymbolized;
                    if answer.complete {
                        let recent = Recent {
                            at: started,
                            ips: ips.to_vec(),
                            top_read: answer.top_read,
                            frames: answer.frames.clone(),
                            unsymbolized,
                        };
                        self.recent.insert(key, recent);
                    }
                    return answer.frames;
                }
            }
        }
        self.unsymbolized += ips.len() as u64;
        ips.iter().map(|&ip| frame::raw(ip)).collect()
    }

    /// The worker's answer within `limit`, or sooner a timeout once the
    /// ring buffer is `FILL_LIMIT` full: the first event of a storm comes
    /// before any batch says there is one, and its wait must not
    /// overflow the buffer.
    fn wait<T>(&self, answer: &Receiver<T>, limit: Duration) -> Result<T, RecvTimeoutError> {
        let Some(fill) = &self.fill else {
            return answer.recv_timeout(limit);
        };
        let started = Instant::now();
        loop {
            let left = limit.saturating_sub(started.elapsed());
            match answer.recv_timeout(left.min(FILL_CHECK)) {
                Err(RecvTimeoutError::Timeout) if left > FILL_CHECK && fill.fill() < FILL_LIMIT => {
                }
                got => return got,
            }
        }
    }
}

fn hash(ips: &[u64]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(ips)
}

fn serve(queue: Receiver<Request>) {
    let mut symbolizer = UserSymbolizer::new();
    for req in queue {
        let before = symbolizer.unsymbolized;
        let run =
            std::panic::AssertUnwindSafe(|| symbolizer.frames_noting(req.pid, &req.ips, &req.top));
        match std::panic::catch_unwind(run) {
            Ok(frames) => {
                let unsymbolized = symbolizer.unsymbolized.saturating_sub(before);
                // The event path may have stopped waiting: nobody to tell.
                let _ = req.reply.send((frames, unsymbolized));
            }
            Err(_) => {
                log::warn!(
                    "--stack: symbolizing a user stack of pid {} panicked",
                    req.pid
                );
                symbolizer = UserSymbolizer::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_worker() -> u64 {
        marker_function_for_worker as fn() -> u64 as usize as u64
    }

    #[test]
    fn frames_come_back_from_the_worker() {
        let mut w = UserWorker::spawn(None);
        let ip = marker_function_for_worker() + 1;
        // The first parse of this (large) test binary may take longer than
        // an event waits; the worker finishes it, and a later event gets it.
        let mut frames = Vec::new();
        for _ in 0..60 {
            frames = w.frames(std::process::id(), &[ip], &[]);
            if !frames[0].starts_with("0x") {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(
            frames[0].contains("marker_function_for_worker"),
            "{frames:?}"
        );
    }

    /// A worker that never answers: its queue (returned) is never read.
    fn stuck_worker() -> (UserWorker, Receiver<Request>) {
        let (requests, queue) = sync_channel(QUEUE);
        let w = UserWorker {
            requests,
            waiting: Budget::new(Instant::now()),
            unsymbolized: 0,
            recent: BoundedCache::new(MAX_RECENT),
            busy: false,
            fill: None,
        };
        (w, queue)
    }

    #[test]
    fn in_a_storm_an_event_does_not_wait_the_full_time_for_its_frames() {
        let (mut w, _queue) = stuck_worker();
        w.set_busy(true);
        let started = Instant::now();
        assert_eq!(w.frames(7, &[0x1234], &[]), ["0x1234"]);
        assert!(started.elapsed() < MAX_WAIT, "{:?}", started.elapsed());
    }

    #[test]
    fn a_stack_answered_is_reused_only_with_the_same_words_at_sp() {
        // Only `recent` can name frames.
        let (mut w, _queue) = stuck_worker();
        let ips = [0x1234, 0x5678];
        w.recent.insert(
            (7, hash(&ips)),
            Recent {
                at: Instant::now(),
                ips: ips.to_vec(),
                top_read: vec![(1, 0x9abc)],
                frames: vec!["close+0x10".into(), "main+0x20".into()],
                unsymbolized: 0,
            },
        );
        assert_eq!(w.frames(7, &ips, &[0, 0x9abc]), ["close+0x10", "main+0x20"]);
        // Another return address where the unwinding step looked, another
        // process, another stack: asked of the worker (raw here).
        assert_eq!(w.frames(7, &ips, &[0, 0x9abd]), ["0x1234", "0x5678"]);
        assert_eq!(w.frames(8, &ips, &[0, 0x9abc]), ["0x1234", "0x5678"]);
        assert_eq!(w.frames(7, &ips[..1], &[0, 0x9abc]), ["0x1234"]);
        assert_eq!(w.unsymbolized, 5);
    }

    #[test]
    fn a_stuck_worker_costs_an_event_at_most_the_wait() {
        let (mut w, queue) = stuck_worker();
        let started = Instant::now();
        let mut events = 0;
        while started.elapsed() < Duration::from_secs(2) {
            let frames = w.frames(1, &[0x1234, 0x5678], &[]);
            assert_eq!(frames, ["0x1234", "0x5678"]);
            events += 1;
        }
        // Waiting stops once it used its share of each second, and a full
        // queue is not waited on: thousands of events, not eight.
        assert!(events > 1000, "{events} events in 2 s");
        assert_eq!(w.unsymbolized, 2 * events);
        drop(queue);
    }
}

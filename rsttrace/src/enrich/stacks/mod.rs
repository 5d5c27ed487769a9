//! `--stack`: the kernel and user stacks of each event, read from the
//! kernel's `STACKS` map by id and symbolized as the event arrives: kernel
//! frames here from kallsyms, user frames on a worker thread (`worker`)
//! that the event path waits for only a bounded time.
//!
//! The map stores each distinct stack once and hands the same id to every
//! event with that stack. Kernel stacks (few: RST paths) stay in the map
//! and are symbolized once per id. User stacks are unique per process
//! (address-space layout), so over days they would fill the map and then
//! no new stack would be captured: an id no event has named for
//! `RECYCLE_AFTER` is deleted (`recycle`). A storm from one code path keeps
//! naming its id, so its events never find it gone; only an event that
//! names a stack again at the very moment it is deleted finds it missing
//! (counted), or, if a new stack took the slot in between, reads that one.
//! `BPF_F_REUSE_STACKID` would risk that at every collision.

pub(crate) mod cache;
pub(crate) mod elf;
pub(crate) mod elfcheck;
pub(crate) mod frame;
pub(crate) mod procmaps;
pub(crate) mod safe_open;
pub(crate) mod unwind;
pub(crate) mod user;
pub(crate) mod worker;

use std::sync::Arc;

use aya::maps::{MapData, StackTraceMap};

use crate::collect::ringfill::RingFill;
use crate::kernel::kallsyms::{self, KernelSymbols};
use crate::model::event::Event;
use cache::BoundedCache;
use worker::UserWorker;

/// An event's frames, innermost first; `None` where no stack was captured
/// (no `--stack`, the kernel could not store it, or no user stack: the
/// socket's owner was not running the code).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stacks {
    pub(crate) kernel: Option<Vec<String>>,
    pub(crate) user: Option<Vec<String>>,
    /// None were taken: the event's CPU had used its `--stack-budget`.
    pub(crate) skipped: bool,
}

/// Distinct kernel stacks whose frames are kept.
const MAX_KERNEL_STACKS: usize = 4096;
/// A user stack id unused this long is deleted from the map.
const RECYCLE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// What went wrong, for the exit summary and the metrics; never fatal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StackStats {
    /// Stack ids the map did not have when read.
    pub(crate) missing: u64,
    /// Frames shown without a symbol (file offset or raw address).
    pub(crate) unsymbolized: u64,
}

pub(crate) struct StackResolver {
    map: StackTraceMap<MapData>,
    /// /proc/kallsyms' text symbols, read before tracing starts.
    kallsyms: KernelSymbols,
    kernel_frames: BoundedCache<u32, Arc<[String]>>,
    user: UserWorker,
    missing: u64,
    kernel_unsymbolized: u64,
    /// When each user stack id still in the map was last named by an
    /// event (at most the map's size).
    user_ids: std::collections::HashMap<u32, std::time::Instant>,
    /// The addresses of those stacks: an id names the same stack until
    /// `recycle` deletes it (nothing else does: no BPF_F_REUSE_STACKID), so
    /// the map is read once per id, not once per event.
    user_ips: std::collections::HashMap<u32, Arc<[u64]>>,
    last_recycle: std::time::Instant,
}

impl StackResolver {
    /// Takes the kernel symbols now (the loader's scan of /proc/kallsyms
    /// kept them): reading them at the first event would take long enough
    /// that a process closing a socket and exiting would be gone by the
    /// time its event got to the user stack.
    /// `fill`: the ring buffer's gauge, which bounds how long an event
    /// waits for its user frames (`UserWorker`).
    pub(crate) fn new(map: StackTraceMap<MapData>, fill: Option<RingFill>) -> StackResolver {
        StackResolver {
            map,
            kallsyms: kallsyms::take_symbols(),
            kernel_frames: BoundedCache::new(MAX_KERNEL_STACKS),
            user: UserWorker::spawn(fill),
            missing: 0,
            kernel_unsymbolized: 0,
            user_ids: std::collections::HashMap::new(),
            user_ips: std::collections::HashMap::new(),
            last_recycle: std::time::Instant::now(),
        }
    }

    pub(crate) fn stats(&self) -> StackStats {
        StackStats {
            missing: self.missing,
            unsymbolized: self.kernel_unsymbolized + self.user.unsymbolized,
        }
    }

    /// `user_stack_top`: the words the kernel copied above the user stack
    /// pointer (`RstEvent::user_stack_top`).
    pub(crate) fn resolve(&mut self, user_stack_top: &[u64], event: &Event) -> Stacks {
        // User first: its process may exit any moment, the kernel stays.
        // The kernel captures a user stack only in the owner's own task
        // context, so the actor's process is the one to symbolize in.
        let user = event.user_stack_id.and_then(|id| {
            let ips = match self.user_ips.get(&id) {
                Some(ips) => ips.clone(),
                None => {
                    let ips: Arc<[u64]> = self.ips(id)?.into();
                    self.user_ips.insert(id, ips.clone());
                    ips
                }
            };
            self.user_ids.insert(id, std::time::Instant::now());
            Some(self.user.frames(event.actor.pid, &ips, user_stack_top))
        });
        let kernel = event.kernel_stack_id.and_then(|id| self.kernel_stack(id));
        Stacks {
            kernel,
            user,
            skipped: event.stack_skipped,
        }
    }

    /// After each batch read from the kernel: a batch of more than a few
    /// events means a storm, where an event must not hold up the drain
    /// waiting for its user frames (`UserWorker::set_busy`).
    pub(crate) fn note_batch(&mut self, records: usize) {
        const BUSY_BATCH: usize = 32;
        self.user.set_busy(records >= BUSY_BATCH);
    }

    /// Frees the slots of user stacks no event named for `RECYCLE_AFTER`,
    /// for new stacks. Called between batches of events.
    pub(crate) fn recycle(&mut self) {
        let now = std::time::Instant::now();
        // At most once a second: a walk of up to MAX_STACKS ids.
        if now.duration_since(self.last_recycle) < std::time::Duration::from_secs(1) {
            return;
        }
        self.last_recycle = now;
        let map = &mut self.map;
        let kernel = &mut self.kernel_frames;
        let user_ips = &mut self.user_ips;
        self.user_ids.retain(|id, seen| {
            if now.duration_since(*seen) < RECYCLE_AFTER {
                return true;
            }
            user_ips.remove(id);
            // A kernel stack never shares an id with a user stack, but a
            // cached kernel id must keep naming its stack.
            if kernel.get(id).is_none() {
                let _ = map.remove(id);
            }
            false
        });
    }

    fn kernel_stack(&mut self, id: u32) -> Option<Vec<String>> {
        if let Some(frames) = self.kernel_frames.get(&id) {
            return Some(frames.to_vec());
        }
        let ips = self.ips(id)?;
        let symbols = &self.kallsyms;
        let frames: Vec<String> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| {
                // Return addresses: look up the call, print the address.
                let lookup = if i == 0 { ip } else { ip.saturating_sub(1) };
                let sym = symbols.resolve(lookup).map(|mut s| {
                    s.offset += ip - lookup;
                    s
                });
                if sym.is_none() {
                    self.kernel_unsymbolized += 1;
                }
                frame::kernel(ip, sym)
            })
            .collect();
        self.kernel_frames.insert(id, frames.clone().into());
        Some(frames)
    }

    fn ips(&mut self, id: u32) -> Option<Vec<u64>> {
        match self.map.get(&id, 0) {
            Ok(trace) => Some(trace.frames().iter().map(|f| f.ip).collect()),
            Err(_) => {
                self.missing += 1;
                None
            }
        }
    }
}

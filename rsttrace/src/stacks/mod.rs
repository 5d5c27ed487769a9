//! `--stack`: the kernel and user stacks of each event, read from the
//! kernel's `STACKS` map by id and symbolized as the event arrives.
//!
//! Ids are never deleted from the map. The map stores each distinct stack
//! once and hands the same id to every event with that stack, and events
//! still in the ring buffer may name an id userspace just read: deleting it
//! would lose their stack, or worse, let a new stack take the slot and be
//! shown for them. `BPF_F_REUSE_STACKID` has the same flaw. So the map only
//! fills with distinct stacks (RST paths have few), a full map or a hash
//! collision makes the kernel skip that stack and count it
//! (`STACK_ERRORS`), and since an id always names the same stack, kernel
//! stacks are symbolized once per id.

pub mod cache;
pub mod frame;
pub mod procmaps;
pub mod unwind;
pub mod user;

use std::sync::Arc;

use aya::maps::{MapData, StackTraceMap};
use rsttrace_ebpf::abi::RstEvent;

use crate::event::Event;
use crate::kernel::kallsyms::KernelSymbols;
use cache::BoundedCache;
use user::UserSymbolizer;

/// An event's frames, innermost first; `None` where no stack was captured
/// (no `--stack`, the kernel could not store it, or no user stack: the
/// socket's owner was not running the code).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stacks {
    pub kernel: Option<Vec<String>>,
    pub user: Option<Vec<String>>,
}

/// Distinct kernel stacks whose frames are kept.
const MAX_KERNEL_STACKS: usize = 4096;

/// What went wrong, for the exit summary and the metrics; never fatal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Stack ids the map did not have when read.
    pub missing: u64,
    /// Frames shown without a symbol (file offset or raw address).
    pub unsymbolized: u64,
}

pub struct StackResolver {
    map: StackTraceMap<MapData>,
    /// /proc/kallsyms, read before tracing starts.
    kallsyms: KernelSymbols,
    kernel_frames: BoundedCache<u32, Arc<[String]>>,
    user: UserSymbolizer,
    missing: u64,
    kernel_unsymbolized: u64,
}

impl StackResolver {
    /// Reads /proc/kallsyms now: parsing it takes long enough that a
    /// process closing a socket and exiting would be gone by the time its
    /// first event got to the user stack.
    pub fn new(map: StackTraceMap<MapData>) -> StackResolver {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        StackResolver {
            map,
            kallsyms: KernelSymbols::parse(&text),
            kernel_frames: BoundedCache::new(MAX_KERNEL_STACKS),
            user: UserSymbolizer::new(),
            missing: 0,
            kernel_unsymbolized: 0,
        }
    }

    pub fn stats(&self) -> StackStats {
        StackStats {
            missing: self.missing,
            unsymbolized: self.kernel_unsymbolized + self.user.unsymbolized,
        }
    }

    pub fn resolve(&mut self, raw: &RstEvent, event: &Event) -> Stacks {
        // User first: its process may exit any moment, the kernel stays.
        // The kernel captures a user stack only in the owner's own task
        // context, so the actor's process is the one to symbolize in.
        let user = event.user_stack_id.and_then(|id| {
            let ips = self.ips(id)?;
            Some(self.user.frames(event.actor.pid, &ips, &raw.user_stack_top))
        });
        let kernel = event.kernel_stack_id.and_then(|id| self.kernel_stack(id));
        Stacks { kernel, user }
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

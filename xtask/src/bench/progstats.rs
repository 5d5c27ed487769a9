//! What each of rsttrace's kernel programs costs, from the kernel's own
//! statistics (run count and run time per program, as `bpftool prog show`
//! prints them).
//!
//! Statistics are switched on with `BPF_ENABLE_STATS`, held as an fd for
//! the measured workload only: they add two clock reads to every run of
//! every program, which the other scenarios must not pay. Closing the fd
//! (also when the bench fails) switches them off again.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// One program's runs over a measured workload.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramCost {
    /// Its name in the object, or the kernel's (at most 15 characters).
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
}

/// Statistics switched on, and the tracer's programs' counters at the start.
pub struct Measurement {
    _enabled: OwnedFd,
    before: BTreeMap<u32, ProgramCost>,
    started: Instant,
}

/// Whether statistics were already on (`kernel.bpf_stats_enabled`, or
/// another holder of the fd): then every scenario pays for them.
pub fn already_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() != "0")
}

impl Measurement {
    /// Switches statistics on and takes the first reading of the programs
    /// process `pid` holds; `names` gives their full names by id.
    pub fn start(pid: u32, names: &BTreeMap<u32, String>) -> Result<Measurement> {
        let ids = program_ids(pid)?;
        if ids.is_empty() {
            bail!("process {pid} holds no BPF programs");
        }
        let enabled = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS (needs Linux 5.8 and root)")?;
        let mut before = snapshot(&ids)?;
        for (id, cost) in before.iter_mut() {
            if let Some(name) = names.get(id) {
                cost.name.clone_from(name);
            }
        }
        Ok(Measurement {
            _enabled: enabled,
            before,
            started: Instant::now(),
        })
    }

    /// The runs since `start`, per program (programs that never ran
    /// included), and how long that was.
    pub fn finish(self) -> Result<(Vec<ProgramCost>, Duration)> {
        let ids: Vec<u32> = self.before.keys().copied().collect();
        let after = snapshot(&ids)?;
        let elapsed = self.started.elapsed();
        let costs = self
            .before
            .iter()
            .filter_map(|(id, before)| {
                let now = after.get(id)?;
                Some(ProgramCost {
                    name: before.name.clone(),
                    runs: now.runs.saturating_sub(before.runs),
                    run_time_ns: now.run_time_ns.saturating_sub(before.run_time_ns),
                })
            })
            .collect();
        Ok((costs, elapsed))
    }
}

/// The ids of the BPF programs process `pid` holds an fd of.
fn program_ids(pid: u32) -> Result<Vec<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(entry) = entry else { continue };
        // An fd closed since the listing has no fdinfo any more.
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some(id) = fdinfo_prog_id(&info) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Runs of each program process `pid` holds that the kernel skipped
/// because a program was already running on that CPU (fdinfo's
/// `recursion_misses`, Linux 5.12+), by program id.
pub fn recursion_misses(pid: u32) -> Result<BTreeMap<u32, u64>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut misses = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(info) = entry.and_then(|e| std::fs::read_to_string(e.path())) else {
            continue;
        };
        if let Some(id) = fdinfo_prog_id(&info) {
            let n = fdinfo_number(&info, "recursion_misses:").unwrap_or(0);
            misses.insert(id, n);
        }
    }
    Ok(misses)
}

fn fdinfo_number(info: &str, key: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// The program of a program fd's fdinfo (`prog_type:` and `prog_id:`
/// lines); link fds, which also name a `prog_id`, are left out.
fn fdinfo_prog_id(info: &str) -> Option<u32> {
    if !info.lines().any(|l| l.starts_with("prog_type:")) {
        return None;
    }
    fdinfo_number(info, "prog_id:").and_then(|id| u32::try_from(id).ok())
}

fn snapshot(ids: &[u32]) -> Result<BTreeMap<u32, ProgramCost>> {
    let mut out = BTreeMap::new();
    let mut first_error = None;
    for info in aya::programs::loaded_programs() {
        match info {
            Ok(info) if ids.contains(&info.id()) => {
                out.insert(
                    info.id(),
                    ProgramCost {
                        name: String::from_utf8_lossy(info.name()).into_owned(),
                        runs: info.run_count(),
                        run_time_ns: info.run_time().as_nanos() as u64,
                    },
                );
            }
            Ok(_) => {}
            // Programs of other processes come and go while we walk the list.
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if out.is_empty() {
        match first_error {
            Some(e) => return Err(e).context("listing loaded BPF programs"),
            None => bail!("none of programs {ids:?} is loaded any more"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_fds_not_links() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\n\
            prog_type:\t5\nprog_jited:\t1\nprog_tag:\t7d3c2e1a\nmemlock:\t4096\nprog_id:\t42\n";
        assert_eq!(fdinfo_prog_id(prog), Some(42));
        assert_eq!(
            fdinfo_number("prog_id:\t42\nrecursion_misses:\t7\n", "recursion_misses:"),
            Some(7)
        );
        let link = "pos:\t0\nflags:\t02000000\nlink_type:\ttracing\nlink_id:\t7\nprog_tag:\t7d3c2e1a\nprog_id:\t42\n";
        assert_eq!(fdinfo_prog_id(link), None);
        assert_eq!(fdinfo_prog_id("pos:\t0\nflags:\t02\n"), None);
    }
}

//! `rsttrace` (trace): load, read, classify, write, and account for every event.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use log::{debug, warn};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::TraceArgs;
use crate::cmd::outputs::{Output, build_outputs};
use crate::collect::clock::BootClock;
use crate::collect::counters::KernelDrops;
use crate::collect::decode::{self, Record};
use crate::collect::loader::{Counters, KernelInfo, Options, Session};
use crate::collect::source::Source;
use crate::correlate::{self, Correlator};
use crate::enrich::hostnet::HostNet;
use crate::enrich::stacks::{StackResolver, StackStats, Stacks};
use crate::filter::{self, RecordFilter};
use crate::model::event::{Event, KernelTables};
use crate::output::Format;
use crate::output::stats::{self, StackSummary};
use crate::record::Classified;

/// Ring buffers must be a power-of-two number of pages.
pub(crate) fn ring_buffer_bytes(requested: u64) -> Result<u32> {
    let page = page_size();
    let too_large = || anyhow!("--ring-buffer {requested} is too large (max 2G)");
    let size = requested
        .max(page)
        .checked_next_power_of_two()
        .ok_or_else(too_large)?;
    u32::try_from(size).map_err(|_| too_large())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Wake the reader when a quarter of the buffer is full (at most 1 MiB):
/// large batches under a storm, and the drain timer covers quiet periods.
fn wakeup_bytes(ring: u32) -> u64 {
    (u64::from(ring) / 4).min(1 << 20)
}

/// Reason names from BTF, and the tick rate once measured.
struct Reasons(
    std::collections::HashMap<u32, Arc<str>>,
    Arc<std::sync::OnceLock<u32>>,
);

impl KernelTables for Reasons {
    fn reason_name(&self, value: u32) -> Option<Arc<str>> {
        self.0.get(&value).cloned()
    }

    fn hz(&self) -> Option<u32> {
        self.1.get().copied()
    }
}

/// The filters the kernel applies, with cgroup paths and container ids
/// resolved to cgroup ids (each with its descendants).
fn kernel_scope(args: &TraceArgs) -> Result<filter::KernelScope> {
    use crate::enrich::scope;
    let root = &scope::cgroup_v2_root();
    let mut dirs = Vec::new();
    for path in &args.cgroups {
        dirs.extend(scope::cgroup_tree(root, path)?);
    }
    for id in &args.filters.containers {
        dirs.extend(scope::container_cgroups(root, id)?);
    }
    if !args.filters.pods.is_empty() || !args.filters.namespaces.is_empty() {
        dirs.extend(scope::pod_cgroups(
            root,
            &mut crate::enrich::containers::RuntimeState::host(&args.runtime_root),
            &args.filters.pods,
            &args.filters.namespaces,
        )?);
    }
    let cgroups = dirs
        .iter()
        .map(|d| scope::cgroup_id(d))
        .collect::<Result<Vec<u64>>>()?;
    Ok(filter::KernelScope {
        ports: args.ports.clone(),
        pids: args.pids.clone(),
        netns: args.filters.netns.clone(),
        cgroups,
    })
}

pub async fn trace(args: TraceArgs) -> Result<()> {
    let started = std::time::Instant::now();
    // First: threads started later (workers, the blocking pool) inherit it.
    match crate::priority::apply(args.nice) {
        crate::priority::Priority::Refused { wanted, error } => warn!(
            "cannot run at nice {wanted} ({error}): an RST storm's threads may starve the \
             reader into losing events; grant CAP_SYS_NICE, or pass --nice 0 to stay at the \
             default priority"
        ),
        done => debug!("scheduling priority: {done:?}"),
    }
    // Start-up parses kernel BTF (megabytes of vectors) up to three times in
    // a row: ours, then aya's twice. With glibc's sliding threshold those
    // land on the heap, where each parse's freed pages stay resident beside
    // the next; a fixed threshold gives every large block its own mapping,
    // returned on free. Measured peak RSS: 28.4 -> 25.0 MB.
    // SAFETY: mallopt has no preconditions; glibc ignores values it refuses.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    let ring_bytes = ring_buffer_bytes(args.ring_buffer)?;
    if args.stack
        && let Some(why) = crate::kernel::helpers::stack_unsupported()
    {
        bail!(why);
    }
    // Probed before anything is built: `--transport ring` on a kernel
    // without it must fail before outputs and listeners exist.
    let ring_supported = crate::collect::transport::probe_ring_buffer();
    let transport = crate::collect::transport::choose(args.transport, &ring_supported)?;
    // The perf transport shares the size out per CPU, and batches its
    // wake-ups by each CPU's share.
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    let perf_bytes =
        crate::collect::transport::perf_bytes_per_cpu(ring_bytes, cpus, page_size() as usize);
    let scope = kernel_scope(&args)?;
    let opts = Options {
        hooks: args.hooks,
        transport,
        filter: filter::kernel_filter(&scope)?,
        ring_buffer_bytes: ring_bytes,
        // With --stack, the events that carry a user stack wake the reader
        // at once (`Options::paced`): their frames are symbolized from
        // /proc/PID/maps, gone once the process exits.
        wakeup_bytes: wakeup_bytes(ring_bytes),
        perf_bytes,
        // A perf buffer wakes for every record alike, or none.
        perf_wakeup_bytes: if args.stack {
            0
        } else {
            wakeup_bytes(perf_bytes as u32)
        },
        stacks: args.stack,
        stack_budget: args.stack_budget,
        firewall: args.firewall,
        // Real RST segments cost a check per packet of the host: only for
        // a capture that holds them.
        capture_packets: args
            .write
            .as_deref()
            .and_then(Format::from_path)
            .is_some_and(|f| f == Format::Pcapng),
    };
    // Validate and create outputs before touching the kernel: a bad path
    // must not cost an attach.
    let mut outputs = build_outputs(&args)?;

    // The summary's counts; `--metrics` serves them while tracing.
    let stats = stats::Shared::default();
    if let Some(addr) = args.metrics {
        let top_ports = args.metrics_top_ports as usize;
        let metrics = crate::output::metrics::Metrics::of(stats.clone(), top_ports);
        let bound = crate::output::metrics::serve(addr, Arc::new(Mutex::new(metrics))).await?;
        crate::output::status::metrics(bound);
    }

    let otlp = match &args.otlp {
        Some(endpoint) => {
            let exporter =
                crate::output::otlp::Exporter::start(endpoint.clone(), args.lang, stats.clone())?;
            eprintln!(
                "rsttrace: exporting to OTLP {}",
                crate::output::otlp::describe(endpoint)
            );
            Some(exporter)
        }
        None => None,
    };

    if args.stack {
        crate::kernel::kallsyms::keep_text_symbols();
    }
    let mut kernel = KernelInfo::probe();
    let mut session = Session::load(&mut kernel, &opts)?;
    // After attaching: a listen() from now on is seen by the kernel side.
    let listeners = crate::enrich::listeners::scan();
    match session.seed_listeners(&listeners.owners) {
        Ok(n) => debug!(
            "{n} ports listening before start lend their owner to their connections{}",
            if listeners.truncated {
                " (the /proc walk hit a bound: some were not looked at)"
            } else {
                ""
            }
        ),
        Err(e) => warn!("ports listening before start will not name their owner: {e:#}"),
    }
    let mut source = Source::new(
        session.take_buffers()?,
        Duration::from_millis(args.drain_interval),
        opts.paced(),
    )?;
    let stacks = match args.stack {
        true => Some(StackResolver::new(
            session.take_stack_map()?,
            source.fill_gauge(u64::from(ring_bytes)),
        )),
        false => None,
    };
    // Keep only the reason names (Session::load already dropped the BTF).
    let KernelInfo { reasons, .. } = kernel;
    // Measured off the event path; events before it is known carry no idle time.
    let hz = Arc::new(std::sync::OnceLock::new());
    let hz_slot = hz.clone();
    std::thread::spawn(move || {
        if let Some(rate) = crate::kernel::hz::measure(Duration::from_millis(100)) {
            let _ = hz_slot.set(rate);
        }
    });
    let reasons = Reasons(
        reasons.into_iter().map(|(v, n)| (v, n.into())).collect(),
        hz,
    );
    // Parsing BTF leaves many small freed allocations in the heap; give
    // them back so a long-running tracer stays small.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let clock = BootClock::sample();
    crate::output::status::ready(&crate::output::status::Ready {
        plan: &session.plan,
        transport: session.transport,
        attach: started.elapsed(),
        programs: session.program_ids(),
    });

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // A closed terminal or SSH session: stop as on SIGTERM, summary
    // written, rather than die with the buffers unflushed.
    let mut sighup = signal(SignalKind::hangup())?;
    crate::signals::exit_on_second_stop_signal()?;
    let deadline = async {
        match args.duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);

    let mut state = Pipeline {
        stats,
        clock,
        reasons: &reasons,
        filter: {
            // The kernel matched containers by cgroup id; the owner's
            // /proc entry may be gone by now, so do not match it again.
            let mut f = args.filters.to_filter(&[], &[]);
            f.containers.clear();
            f.pods.clear();
            f.namespaces.clear();
            f
        },
        procs: crate::enrich::procinfo::ProcCache::new(4096),
        runtimes: crate::enrich::containers::RuntimeState::host(&args.runtime_root),
        otlp,
        limit: args.count,
        limit_reached: false,
        seen_lost: 0,
        seen_drops: KernelDrops::default(),
        stacks,
        user_stack_read: false,
        panicked: None,
        correlate: Correlator::new(
            HostNet::default(),
            correlate::conntrack_established_timeout(),
            blind_to_sends(&session.plan, &scope),
        ),
        ready: Vec::new(),
        listener_groups: Default::default(),
        now: None,
    };
    loop {
        let batch = tokio::select! {
            // Stop requests first: under a storm the ring buffer is always ready.
            biased;
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
            _ = &mut deadline => break,
            batch = source.next_batch(|bytes| state.handle_guarded(bytes, &mut outputs)) => batch,
        };
        let read = batch.context("reading the event buffers")?;
        if let Some(stacks) = &mut state.stacks {
            stacks.note_batch(read);
        }
        if std::mem::take(&mut state.user_stack_read) {
            source.follow_up();
        }
        // Received RSTs that waited long enough for their sender's event.
        let released = state.release_waiting(false, &mut outputs);
        if read + released > 0 {
            // Once per batch: a person watching sees each RST within one
            // drain interval, and a storm costs one write per batch, not per event.
            for o in &mut outputs {
                o.flush();
            }
            if let Some(stacks) = &mut state.stacks {
                stacks.recycle();
            }
        }
        state.account_losses(source.with_losses(session.counters(false)?), &mut outputs);
        session.recheck_firewall();
        state.now = None;
        // Under a storm the ring buffer is never empty, so no branch above
        // ever waits: yield so the runtime polls its driver (signals, timers).
        tokio::task::yield_now().await;
        let all_outputs_failed = !outputs.is_empty() && outputs.iter().all(|o| o.failed.is_some());
        if state.done() || all_outputs_failed || state.panicked.is_some() {
            break;
        }
    }
    // Everything the kernel already wrote is read and written before exit.
    if !state.done() {
        // What a full buffer held when we stopped; a storm still running
        // does not keep rsttrace from exiting.
        let limit = ring_bytes as usize / size_of::<rsttrace_ebpf::abi::RstEvent>();
        source.drain_now(|bytes| state.handle_guarded(bytes, &mut outputs), limit);
    }
    state.release_waiting(true, &mut outputs);
    let counters = source.with_losses(session.counters(true)?);
    state.account_losses(counters, &mut outputs);
    for o in &mut outputs {
        o.flush();
    }
    if let Some(otlp) = &mut state.otlp {
        otlp.finish();
        stats::lock(&state.stats).otlp_dropped = Some(otlp.dropped());
    }
    let panicked = state.panicked.take();
    finish(&state.stats, &outputs, args.lang)?;
    match panicked {
        Some(what) => bail!(
            "internal error while handling an event: {what}; tracing stopped, the outputs are complete up to it"
        ),
        None => Ok(()),
    }
}

/// Why some RSTs sent on this host are not traced, if any are not: then a
/// received RST whose sender is local but unpaired accuses no one.
fn blind_to_sends(
    plan: &crate::collect::probes::Plan,
    scope: &filter::KernelScope,
) -> Option<&'static str> {
    if !plan.no_socket {
        Some("the send hook misses socketless RSTs")
    } else if !scope.pids.is_empty() || !scope.cgroups.is_empty() || !scope.netns.is_empty() {
        // Port filters keep both ends of a flow; these keep one side.
        Some("a --pid, --cgroup, --container, --pod, --namespace or --netns filter")
    } else {
        None
    }
}

/// The words above the user stack pointer the kernel copied, for
/// `--stack`'s unwinder (empty, not allocated, without `--stack`): all an
/// event needs of its raw record once decoded.
type UserStackTop = Box<[u64]>;

struct Pipeline<'a> {
    /// Counted once per event; the summary and `--metrics` render it.
    stats: stats::Shared,
    clock: BootClock,
    reasons: &'a Reasons,
    /// The kernel already applied --port/--pid; this holds the rest.
    filter: RecordFilter,
    procs: crate::enrich::procinfo::ProcCache,
    /// Pod, namespace, container name and image, from the runtimes' state.
    runtimes: crate::enrich::containers::RuntimeState,
    /// `--otlp`: never blocks; counts what it cannot deliver.
    otlp: Option<crate::output::otlp::Exporter>,
    limit: Option<u64>,
    /// `limit` events written: the rest are not.
    limit_reached: bool,
    /// Kernel `lost` counter already reported as a gap.
    seen_lost: u64,
    /// Kernel drops already reported as gaps.
    seen_drops: KernelDrops,
    /// `--stack`.
    stacks: Option<StackResolver>,
    /// An event with a user stack was read since the last batch ended
    /// (`Source::follow_up`).
    user_stack_read: bool,
    /// What a panic while handling an event said; tracing then stops,
    /// with the outputs flushed and the summary written.
    panicked: Option<String>,
    /// Pairs received RSTs with their senders, folds phantom receives;
    /// classifies. Received events wait in it briefly.
    correlate: Correlator<HostNet, UserStackTop>,
    /// Events it released, reused between calls.
    ready: Vec<correlate::Ready<UserStackTop>>,
    /// SO_REUSEPORT groups, named from /proc when one's RST is reported.
    listener_groups: crate::enrich::listeners::Groups,
    /// The batch's time: read at its first event, used for all of it and
    /// for releasing waiting events after it (one clock read per batch,
    /// not per event). Cleared between batches.
    now: Option<std::time::Instant>,
}

impl Pipeline<'_> {
    fn done(&self) -> bool {
        self.limit_reached
    }

    /// The batch's time. A received event's wait (`correlate::HOLD`)
    /// starts at its batch's start and ends at a later batch's start, so
    /// the batch after it, where its sender's event may be, is always read
    /// before it is released.
    fn now(&mut self) -> std::time::Instant {
        *self.now.get_or_insert_with(std::time::Instant::now)
    }

    /// `handle`, with a panic turned into an orderly stop.
    fn handle_guarded(&mut self, bytes: &[u8], outputs: &mut [Output]) {
        if self.panicked.is_some() {
            return;
        }
        let run = std::panic::AssertUnwindSafe(|| self.handle(bytes, outputs));
        if let Err(payload) = std::panic::catch_unwind(run) {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            self.panicked = Some(what);
        }
    }

    fn handle(&mut self, bytes: &[u8], outputs: &mut [Output]) {
        if self.done() {
            return;
        }
        let raw = match decode::decode(bytes) {
            Ok(Record::Rst(raw)) => raw,
            Ok(Record::Packet(raw)) => {
                let packet = crate::output::pcapng::pairing::WirePacket::new(&raw, |ns| {
                    self.clock.to_wall(ns)
                });
                for o in outputs.iter_mut() {
                    o.packet(&packet);
                }
                return;
            }
            Err(e) => {
                let mut stats = stats::lock(&self.stats);
                if stats.decode_errors == 0 {
                    warn!("undecodable record: {e}");
                }
                stats.decode_errors += 1;
                return;
            }
        };
        self.user_stack_read |= raw.user_stack_id >= 0;
        let now = self.now();
        let mut event = Event::new(&raw, self.reasons, |ns| self.clock.to_wall(ns));
        if let Some(group) = &mut event.listener_group {
            *group = self
                .listener_groups
                .members(raw.netns, event.local.port(), now);
        }
        let mut ready = std::mem::take(&mut self.ready);
        let top = match self.stacks {
            Some(_) => Box::from(&raw.user_stack_top[..]),
            None => Box::default(),
        };
        self.correlate.push(event, top, now, &mut ready);
        for (event, top, cause) in ready.drain(..) {
            self.write(event, &top, cause, outputs);
        }
        self.ready = ready;
    }

    /// Writes the received events that waited long enough for a sender
    /// (all of them at the end); returns how many.
    fn release_waiting(&mut self, all: bool, outputs: &mut [Output]) -> usize {
        let mut ready = std::mem::take(&mut self.ready);
        let now = self.now();
        if all {
            self.correlate.flush(now, &mut ready);
        } else {
            self.correlate.expire(now, &mut ready);
        }
        let released = ready.len();
        for (event, top, cause) in ready.drain(..) {
            self.write(event, &top, cause, outputs);
        }
        self.ready = ready;
        released
    }

    fn write(
        &mut self,
        event: Event,
        user_stack_top: &[u64],
        cause: crate::model::cause::Cause,
        outputs: &mut [Output],
    ) {
        if self.done() {
            return;
        }
        // /proc reads are small and cached per pid; an exited owner is missed.
        let now = self.now();
        let runtimes = &mut self.runtimes;
        let owner_proc = event.process.as_ref().map(|p| {
            self.procs
                .get_with(p.pid, now, crate::enrich::procinfo::start_time, |pid| {
                    let mut info = crate::enrich::procinfo::read_proc(pid);
                    if let Some(c) = &mut info.container {
                        c.look_up_names(runtimes);
                    }
                    info
                })
        });
        let mut rec = Classified {
            event,
            cause,
            owner_proc,
            stacks: Stacks::default(),
        };
        if !self.filter.matches(&rec) {
            stats::lock(&self.stats).filtered_userspace += 1;
            return;
        }
        // Symbolized now, while the owner (its /proc/PID/maps) likely still exists.
        if let Some(stacks) = &mut self.stacks {
            rec.stacks = stacks.resolve(user_stack_top, &rec.event);
        }
        for o in outputs.iter_mut() {
            o.write(&rec);
        }
        if let Some(otlp) = &self.otlp {
            otlp.export(&rec);
        }
        let mut stats = stats::lock(&self.stats);
        stats.add(&rec);
        self.limit_reached = self.limit.is_some_and(|n| stats.total() >= n);
    }

    /// Marks lost events and other kernel drops in the outputs where they
    /// happened (between batches).
    fn account_losses(&mut self, counters: Counters, outputs: &mut [Output]) {
        {
            let mut stats = stats::lock(&self.stats);
            stats.lost = counters.lost;
            stats.filtered = counters.filtered;
            stats.read_errors = counters.read_errors;
            stats.kernel_drops = counters.drops;
            stats.aborts_merged = counters.aborts_merged;
            if let Some(stacks) = &self.stacks {
                stats.stacks = Some(stack_summary(counters, stacks.stats()));
            }
        }
        let lost = counters.lost;
        if lost > self.seen_lost {
            let now = self.now();
            self.correlate.note_loss(now);
            for o in outputs.iter_mut() {
                o.gap(lost - self.seen_lost, std::time::SystemTime::now());
            }
            self.seen_lost = lost;
        }
        let drops = counters.drops.since(&self.seen_drops);
        if drops.any() {
            for o in outputs.iter_mut() {
                o.drops(&drops, std::time::SystemTime::now());
            }
            self.seen_drops = counters.drops;
        }
    }
}

fn stack_summary(counters: Counters, stats: StackStats) -> StackSummary {
    StackSummary {
        not_captured: counters.stack_errors,
        skipped: counters.stacks_skipped,
        missing: stats.missing,
        unsymbolized: stats.unsymbolized,
    }
}

/// Writes the summary (the kernel's counters are in `stats` since the last
/// `account_losses`).
fn finish(
    stats: &stats::Shared,
    outputs: &[Output],
    lang: crate::model::explain::Lang,
) -> Result<()> {
    {
        let mut stats = stats::lock(stats);
        stats.write_errors = outputs.iter().map(|o| o.unwritten).sum();
        crate::output::status::summary(&stats, lang);
    }
    for o in outputs {
        if let Some(e) = &o.failed
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            crate::output::status::warning(format!(
                "{} events were not written to {}: {e}",
                o.unwritten, o.name
            ));
        }
    }
    let file_failed = outputs
        .iter()
        .any(|o| o.name != "stdout" && o.failed.is_some());
    if file_failed {
        bail!("the export file is incomplete (see above)");
    }
    io::stderr().flush().ok();
    Ok(())
}

#[cfg(test)]
mod tests;

//! Command line. Doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::collect::probes::HookMode;

/// Who sent that TCP RST, and why.
///
/// Traces every TCP reset this host sends or receives and names its root cause
/// (port not open, close() with unread data, SO_LINGER 0, data after close,
/// keepalive timeout, ...). Runs until Ctrl-C, --duration or --count, then
/// prints a summary (to stderr) with lost-event counts.
///
/// Examples:
///   sudo rsttrace
///   sudo rsttrace --port 8080 --write resets.jsonl
///   sudo rsttrace --format json --duration 60 | jq .cause
#[derive(Debug, Parser)]
#[command(name = "rsttrace", version, verbatim_doc_comment)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub trace: TraceArgs,

    /// Kernel BTF from FILE instead of /sys/kernel/btf/vmlinux, for kernels
    /// built without CONFIG_DEBUG_INFO_BTF: a BTFHub file for this kernel,
    /// or the .BTF section of its vmlinux with debug info. Also RSTTRACE_BTF.
    #[arg(long, value_name = "FILE", global = true)]
    pub btf: Option<PathBuf>,

    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What rsttrace says about itself on stderr (ready and its hook plan,
    /// warnings, the summary, errors): text, or json for programs, one
    /// object per line with an `event` key (see docs/schema.md).
    #[arg(long, value_enum, default_value_t = crate::output::status::LogFormat::Text, global = true)]
    pub log_format: crate::output::status::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace resets (the default when no command is given).
    Trace(Box<TraceArgs>),
    /// Replay a JSON Lines export through the same formatters and filters
    /// (post-mortem, on any machine, no privileges needed).
    Read(Box<ReadArgs>),
    /// Print a shell completion script: `rsttrace completions bash > /etc/bash_completion.d/rsttrace`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Explain one cause (or all): what the application sees, what the
    /// kernel does, what rsttrace observes, how to fix it.
    Explain {
        /// A cause id, e.g. close_unread_data; all causes when omitted.
        #[arg(value_parser = crate::filter::parse_cause)]
        cause: Option<crate::model::cause::CauseId>,
        /// Language of the explanations.
        #[arg(long, value_enum, default_value_t = crate::model::explain::Lang::En)]
        lang: crate::model::explain::Lang,
        /// Print docs/causes.md instead.
        #[arg(long, hide = true)]
        markdown: bool,
    },
    /// Print the man page (roff) to stdout.
    #[command(hide = true)]
    Man,
    /// Report what this kernel offers: version, BTF, each hook (available,
    /// chosen, or why not), reason support, and which causes can be told
    /// apart here. Exits non-zero when nothing usable exists. Run as root to
    /// include the fentry trial load.
    Check(CheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Report the plan for this hook family (as `--hooks` of trace would).
    #[arg(long, value_enum, default_value_t = HookMode::Auto)]
    pub hooks: HookMode,

    /// Also load and attach every usable hook family (with packet capture)
    /// and print each program's verified instruction count.
    #[arg(long)]
    pub verify: bool,

    /// The object `--verify` loads: auto (the one trace would take), ring,
    /// perf, or all (both; each load costs a verification of every program).
    #[arg(long, value_enum, default_value_t = VerifyTransport::Auto)]
    pub transport: VerifyTransport,
}

/// `rsttrace check --transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyTransport {
    Auto,
    Ring,
    Perf,
    All,
}

#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// The .jsonl export to read (`-` for stdin).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub filters: RecordFilterArgs,

    /// Only resets on sockets of process PID (repeatable).
    #[arg(long = "pid", value_name = "PID",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Only resets whose local or remote port is PORT (repeatable).
    #[arg(short, long = "port", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = StdoutFormat::Text)]
    pub format: StdoutFormat,

    /// Never colour the text output (also NO_COLOR=1).
    #[arg(long)]
    pub no_color: bool,

    /// Language of the explanations (JSON `explanation`) and the summary.
    #[arg(long, value_enum, default_value_t = crate::model::explain::Lang::En)]
    pub lang: crate::model::explain::Lang,
}

/// Filters on facts known only in userspace (the cause) or cheap there.
#[derive(Debug, Clone, Args)]
pub struct RecordFilterArgs {
    /// Only this cause (repeatable), e.g. port_not_open, linger_zero;
    /// `rsttrace explain` lists them.
    #[arg(long = "cause", value_name = "ID", value_parser = crate::filter::parse_cause)]
    pub causes: Vec<crate::model::cause::CauseId>,

    /// Only RSTs this host sent, or received, or aborts without an RST (repeatable).
    #[arg(long = "direction", value_name = "DIR", value_enum)]
    pub directions: Vec<DirectionArg>,

    /// Only this local port (repeatable).
    #[arg(long = "sport", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub sports: Vec<u16>,

    /// Only this remote port (repeatable).
    #[arg(long = "dport", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub dports: Vec<u16>,

    /// Only RSTs with either end in ADDR or CIDR block, e.g. 10.0.0.0/8 (repeatable).
    #[arg(long = "addr", value_name = "ADDR|CIDR", value_parser = crate::filter::parse_cidr)]
    pub addrs: Vec<crate::filter::Cidr>,

    /// Only sockets whose owner (or acting task) has this command name (repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,

    /// Only resets in this network namespace: its inode (`ls -Li /proc/PID/ns/net`),
    /// an `ip netns` name, or a namespace file (repeatable, up to 8; in the kernel).
    #[arg(long = "netns", value_name = "INODE|NAME|PATH",
          value_parser = crate::enrich::scope::parse_netns)]
    pub netns: Vec<u32>,

    /// Only sockets of processes in this container: its id or a prefix of it
    /// (docker, containerd/Kubernetes, CRI-O, podman; repeatable). Tracing
    /// resolves it to the container's cgroups and filters in the kernel.
    #[arg(long = "container", value_name = "ID",
          value_parser = crate::enrich::scope::parse_container_id)]
    pub containers: Vec<String>,

    /// Only sockets of processes in this Kubernetes pod, by name (repeatable;
    /// with --namespace, both must match). Tracing resolves it, through the
    /// container runtime's state, to the pod's cgroups and filters in the kernel.
    #[arg(long = "pod", value_name = "NAME", value_parser = parse_k8s_name)]
    pub pods: Vec<String>,

    /// Only sockets of processes in pods of this Kubernetes namespace
    /// (repeatable); in the kernel, like --pod.
    #[arg(long = "namespace", value_name = "NAMESPACE", value_parser = parse_k8s_name)]
    pub namespaces: Vec<String>,
}

/// `--pod`, `--namespace`: Kubernetes object names are DNS labels or
/// subdomains (lower-case letters, digits, `-` and `.`, at most 253).
pub fn parse_k8s_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a Kubernetes name: lower-case letters, digits, `-` and `.` \
             (as `kubectl get pods -A` shows it)"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    Sent,
    Received,
    /// Connections that died without an RST (timeouts, ICMP errors).
    Abort,
}

impl RecordFilterArgs {
    pub fn to_filter(&self, ports: &[u16], pids: &[u32]) -> crate::filter::RecordFilter {
        crate::filter::RecordFilter {
            ports: ports.to_vec(),
            pids: pids.to_vec(),
            causes: self.causes.clone(),
            sports: self.sports.clone(),
            dports: self.dports.clone(),
            addrs: self.addrs.clone(),
            comms: self.comms.clone(),
            netns: self.netns.clone(),
            containers: self.containers.clone(),
            pods: self.pods.clone(),
            namespaces: self.namespaces.clone(),
            directions: self
                .directions
                .iter()
                .map(|d| match d {
                    DirectionArg::Sent => crate::model::event::Direction::Sent,
                    DirectionArg::Received => crate::model::event::Direction::Received,
                    DirectionArg::Abort => crate::model::event::Direction::Abort,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Only resets whose local or remote port is PORT (repeatable, up to 16).
    #[arg(short, long = "port", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// Only resets on sockets owned by process PID (or, without a known
    /// owner, made in PID's task context); repeatable, up to 16.
    #[arg(long = "pid", value_name = "PID",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Only sockets of processes in this cgroup (v2) or below it, as
    /// /proc/PID/cgroup shows it, e.g. /system.slice/nginx.service (repeatable).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<String>,

    #[command(flatten)]
    pub filters: RecordFilterArgs,

    /// Format of the events on stdout.
    #[arg(short, long, value_enum, default_value_t = StdoutFormat::Text)]
    pub format: StdoutFormat,

    /// Also write every event to FILE; the format follows the extension:
    /// .jsonl/.json (JSON Lines), .csv, .pcapng (Wireshark, cause in the
    /// packet comment), .txt/.log (text). Created new, mode 0600; a FILE
    /// left by an earlier run is rotated to FILE.1 on start (nothing is
    /// truncated), and a symlink, hard link, FIFO or another user's file at
    /// FILE is refused.
    #[arg(short, long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,

    /// Start a new --write file when the current one passes SIZE (e.g. 100M);
    /// older files are renamed FILE.1, FILE.2, ...
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "write")]
    pub rotate_size: Option<u64>,

    /// How many --write files are kept, the current one included (at
    /// --rotate-size, and when a restart moves the previous file aside).
    #[arg(long, value_name = "N", default_value_t = 10, requires = "write",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rotate_count: u32,

    /// Print nothing per event on stdout (use with --write).
    #[arg(short, long)]
    pub quiet: bool,

    /// Stop after SECS seconds.
    #[arg(short, long, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,

    /// Stop after N events.
    #[arg(short = 'n', long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Capture the kernel stack of every event, and the user stack where
    /// the socket's owner ran the code (close(), shutdown(), setsockopt(),
    /// connect()): symbolized, with source lines where debug info exists.
    #[arg(long)]
    pub stack: bool,

    /// With --stack: at most N events per second per CPU take stacks (a
    /// stack walk costs the reset's own path microseconds); in a storm of
    /// RSTs the rest are written without, marked `stack_skipped` and
    /// counted in the summary. 0: every event takes them, whatever the cost.
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "stack")]
    pub stack_budget: u32,

    /// See RSTs a firewall on this host makes (nftables `reject with tcp
    /// reset`, iptables `REJECT --reject-with tcp-reset`) on kernels
    /// without kprobes, by checking every packet sent for an RST without a
    /// socket. Where kprobes work they are seen anyway, at no cost to
    /// healthy traffic; `rsttrace check` says which applies and the cost.
    #[arg(long)]
    pub firewall: bool,

    /// Kernel hooks: auto picks the best the kernel offers (see `rsttrace
    /// check`); the others force one family: tp_btf, tracepoint, fentry, kprobe.
    #[arg(long, value_enum, default_value_t = HookMode::Auto)]
    pub hooks: HookMode,

    /// How events reach rsttrace: auto takes the BPF ring buffer where the
    /// kernel has it (5.8+) and a perf event array elsewhere.
    #[arg(long, value_enum, default_value_t = crate::collect::transport::TransportMode::Auto)]
    pub transport: crate::collect::transport::TransportMode,

    /// Event buffer size (e.g. 4M, 512K); rounded up to a power of two.
    /// The perf transport shares it out per CPU (at least a page each).
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
    pub ring_buffer: u64,

    /// The tracer's nice value (-20..19). Default: -10, unless rsttrace was
    /// started at another value than 0 (a service's Nice=): under an RST
    /// storm a reader that waits its turn behind the storm's threads loses
    /// events. Needs CAP_SYS_NICE to go below the starting value.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: Option<i32>,

    /// How often the reader drains the ring buffer when no wake-up came (ms).
    #[arg(long, value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub drain_interval: u64,

    /// Never colour the text output (also NO_COLOR=1).
    #[arg(long)]
    pub no_color: bool,

    /// Language of the explanations in the output (JSON `explanation`).
    #[arg(long, value_enum, default_value_t = crate::model::explain::Lang::En)]
    pub lang: crate::model::explain::Lang,

    /// Serve Prometheus metrics on ADDR:PORT (a bare PORT binds 127.0.0.1).
    #[arg(long, value_name = "ADDR:PORT", value_parser = crate::output::metrics::parse_addr)]
    pub metrics: Option<std::net::SocketAddr>,

    /// Where the container runtimes' state directories are (/run/containerd,
    /// /var/lib/docker/containers ...): the host's root, or where they are
    /// mounted, e.g. /host.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub runtime_root: PathBuf,

    /// Export every event as an OpenTelemetry log record, and the per-cause
    /// counters as metrics, to this OTLP/HTTP collector (protobuf; port 4318
    /// when omitted), e.g. http://otel-collector:4318. Batched and retried
    /// off the tracing path; what cannot be delivered is counted as dropped.
    #[arg(long, value_name = "URL", value_parser = crate::output::otlp::parse_endpoint)]
    pub otlp: Option<crate::output::otlp::Endpoint>,

    /// How many of the busiest local ports get their own metric series.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub metrics_top_ports: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StdoutFormat {
    Text,
    Json,
    Csv,
}

/// `4M`, `512K`, `1G` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("`{s}` is not a size; use a number with an optional K, M or G suffix")
    })?;
    let mult = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("unknown size unit in `{s}`; use K, M or G")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{s}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for args in [
            &["rsttrace", "--port", "70000"][..],
            &["rsttrace", "--port", "0"],
            &["rsttrace", "--pid", "x"],
            &["rsttrace", "--format", "xml"],
            &["rsttrace", "--ring-buffer", "4X"],
            &["rsttrace", "--stack-budget", "10"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(err.contains(args[1]), "{args:?}: {err}");
        }
    }

    #[test]
    fn repeatable_filters() {
        let cli =
            Cli::try_parse_from(["rsttrace", "-p", "80", "--port", "443", "--pid", "7"]).unwrap();
        assert_eq!(cli.trace.ports, vec![80, 443]);
        assert_eq!(cli.trace.pids, vec![7]);
    }
}

//! What rsttrace says about itself on stderr: that it is ready and with which
//! plan, warnings, the exit summary, a fatal error. Text for people by
//! default; with `--log-format json`, one JSON object per line, so that
//! tests, the bench and supervisors never scrape the human text
//! (docs/schema.md, "Status lines").

use std::fmt::Display;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use clap::ValueEnum;
use serde_json::{Value, json};

use crate::collect::probes::Plan;
use crate::collect::transport::Transport;
use crate::model::explain::Lang;
use crate::output::stats::Stats;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Sentences for people.
    #[default]
    Text,
    /// One JSON object per line, with an `event` key.
    Json,
}

/// Chosen once, at start-up, for the whole process (as the log level is).
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
}

pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// One line in one write, so that lines of other threads never interleave.
fn emit(line: &str) {
    let mut line = line.to_owned();
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn emit_json(value: &Value) {
    emit(&value.to_string());
}

/// The tracer is attached: every RST from now on is seen.
pub(crate) struct Ready<'a> {
    pub(crate) plan: &'a Plan,
    /// How records reach rsttrace.
    pub(crate) transport: Transport,
    /// From the start of `trace` to attached.
    pub(crate) attach: Duration,
    /// The loaded programs: name in the object, and the kernel's program id
    /// (`bpftool prog show id N`).
    pub(crate) programs: Vec<(String, u32)>,
}

pub(crate) fn ready(r: &Ready<'_>) {
    match format() {
        LogFormat::Text => emit(&format!(
            "rsttrace: tracing TCP resets ({} transport={}); Ctrl-C to stop",
            r.plan,
            r.transport.name()
        )),
        LogFormat::Json => emit_json(&ready_json(r)),
    }
}

fn ready_json(r: &Ready<'_>) -> Value {
    let plan = r.plan;
    let family = |hook: &str| hook.split(':').next().unwrap_or(hook).to_owned();
    json!({
        "event": "ready",
        "version": env!("CARGO_PKG_VERSION"),
        "attach_ms": r.attach.as_millis() as u64,
        "transport": r.transport.name(),
        "plan": {
            "send": plan.send.name,
            "send_family": family(plan.send.name),
            "receive": plan.receive.name,
            "receive_family": family(plan.receive.name),
            "no_socket_hook": plan.no_socket_hook.map(|h| h.name),
            "context": plan.context.name(),
            "reason": if plan.reason { "kernel" } else { "inferred" },
            "no_socket": plan.no_socket,
            "rx_packet": plan.packet,
            "aborts": plan.aborts.is_some(),
            "abort_hook": plan.aborts.map(|h| h.name),
            "abort_family": plan.aborts.map(|h| family(h.name)),
            "packet_capture": plan.packets,
            "firewall": plan.firewall.to_string(),
            "firewall_cost": matches!(plan.firewall, crate::collect::probes::Firewall::Device { .. })
                .then_some(crate::collect::probes::FIREWALL_DEVICE_COST),
        },
        "programs": r.programs.iter().map(|(name, id)| json!({"name": name, "id": id})).collect::<Vec<_>>(),
    })
}

pub(crate) fn metrics(bound: SocketAddr) {
    let url = format!("http://{bound}/metrics");
    match format() {
        LogFormat::Text => emit(&format!("rsttrace: metrics on {url}")),
        LogFormat::Json => emit_json(&json!({"event": "metrics", "url": url})),
    }
}

/// Something went wrong but tracing goes on.
pub(crate) fn warning(message: impl Display) {
    match format() {
        LogFormat::Text => emit(&format!("rsttrace: {message}")),
        LogFormat::Json => {
            emit_json(&json!({"event": "warning", "message": message.to_string()}));
        }
    }
}

/// The exit summary (also of `rsttrace read`).
pub(crate) fn summary(stats: &Stats, lang: Lang) {
    match format() {
        LogFormat::Text => {
            let _ = std::io::stderr()
                .lock()
                .write_all(crate::output::summary::render(stats, lang).as_bytes());
        }
        LogFormat::Json => emit_json(&crate::output::summary::to_json(stats)),
    }
}

/// The error that ends rsttrace, with its causes.
pub fn error(e: &anyhow::Error) {
    match format() {
        LogFormat::Text => emit(&format!("rsttrace: error: {e:#}")),
        LogFormat::Json => emit_json(&json!({"event": "error", "message": format!("{e:#}")})),
    }
}

/// A `log` record (warnings, and -v decisions) as a status line.
pub fn log_json(record: &log::Record<'_>) -> String {
    json!({
        "event": "log",
        "level": record.level().as_str().to_ascii_lowercase(),
        "target": record.target(),
        "message": record.args().to_string(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::probes::tests::{linux_6_1, linux_6_18};
    use crate::collect::probes::{HookMode, choose};

    #[test]
    fn ready_line_names_the_plan_and_programs() {
        let plan = choose(HookMode::Auto, &linux_6_18()).unwrap();
        let line = ready_json(&Ready {
            plan: &plan,
            transport: Transport::Perf,
            attach: Duration::from_millis(420),
            programs: vec![("btf_tcp_send_reset".into(), 17)],
        });
        assert_eq!(line["event"], "ready");
        assert_eq!(line["attach_ms"], 420);
        assert_eq!(line["transport"], "perf");
        assert_eq!(line["plan"]["send"], plan.send.name);
        assert_eq!(line["plan"]["send_family"], "tp_btf");
        assert_eq!(line["plan"]["reason"], "kernel");
        assert_eq!(line["plan"]["no_socket"], true);
        assert_eq!(line["plan"]["aborts"], true);
        assert_eq!(line["plan"]["abort_hook"], "tp_btf:inet_sk_error_report");
        assert_eq!(line["plan"]["abort_family"], "tp_btf");
        assert_eq!(line["programs"][0]["name"], "btf_tcp_send_reset");
        assert_eq!(line["programs"][0]["id"], 17);

        let old = choose(HookMode::Tracepoint, &linux_6_1()).unwrap();
        let line = ready_json(&Ready {
            plan: &old,
            transport: Transport::Ring,
            attach: Duration::ZERO,
            programs: vec![],
        });
        assert_eq!(line["plan"]["send_family"], "tracepoint");
        assert_eq!(line["plan"]["reason"], "inferred");
    }
}

//! `--metrics ADDR:PORT`: Prometheus text exposition of the run's `Stats`
//! (the counts the end-of-run summary shows).
//!
//! Label cardinality is bounded by construction: `cause` and `direction` are
//! closed sets, `kernel_reason` comes from the kernel's enum, and ports are
//! only exported as a top-N (`--metrics-top-ports`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::output::stats::{self, Stats};

/// The endpoint's view of the tracer's `Stats`.
#[derive(Debug, Default)]
pub struct Metrics {
    stats: stats::Shared,
    top_ports: usize,
}

pub type Shared = Arc<Mutex<Metrics>>;

impl Metrics {
    /// On counts of its own (nothing updates them: for tests).
    pub fn new(top_ports: usize) -> Metrics {
        Metrics::of(stats::Shared::default(), top_ports)
    }

    /// On the tracer's counts.
    pub(crate) fn of(stats: stats::Shared, top_ports: usize) -> Metrics {
        Metrics { stats, top_ports }
    }

    fn render(&self) -> String {
        render(&stats::lock(&self.stats), self.top_ports)
    }
}

/// Prometheus text format 0.0.4, with the `top_ports` busiest local ports.
pub(crate) fn render(stats: &Stats, top_ports: usize) -> String {
    let mut s = String::new();
    s.push_str(
        "# HELP rsttrace_resets_total TCP resets seen, by direction, cause and kernel reason.\n",
    );
    s.push_str("# TYPE rsttrace_resets_total counter\n");
    // By label value, as the series were always listed.
    let mut resets: Vec<_> = stats
        .resets()
        .map(|(cause, direction, reason, n)| (direction.as_str(), cause.id(), reason, n))
        .collect();
    resets.sort_unstable();
    for (direction, cause, reason, n) in resets {
        let _ = writeln!(
            s,
            "rsttrace_resets_total{{direction=\"{direction}\",cause=\"{cause}\",kernel_reason=\"{}\"}} {n}",
            escape_label(reason)
        );
    }
    s.push_str(
        "# HELP rsttrace_lost_events_total Events the kernel could not queue (ring buffer full).\n",
    );
    s.push_str("# TYPE rsttrace_lost_events_total counter\n");
    let _ = writeln!(s, "rsttrace_lost_events_total {}", stats.lost);
    s.push_str("# HELP rsttrace_filtered_events_total Events dropped by filters.\n");
    s.push_str("# TYPE rsttrace_filtered_events_total counter\n");
    let _ = writeln!(
        s,
        "rsttrace_filtered_events_total{{where=\"kernel\"}} {}",
        stats.filtered
    );
    let _ = writeln!(
        s,
        "rsttrace_filtered_events_total{{where=\"userspace\"}} {}",
        stats.filtered_userspace
    );
    s.push_str("# HELP rsttrace_kernel_drops_total What the kernel side could not capture or remember, by kind.\n");
    s.push_str("# TYPE rsttrace_kernel_drops_total counter\n");
    for (kind, _, n) in stats.kernel_drops.kinds() {
        let _ = writeln!(s, "rsttrace_kernel_drops_total{{kind=\"{kind}\"}} {n}");
    }
    s.push_str("# HELP rsttrace_aborts_merged_total Error reports merged into the RST reported just before them.\n");
    s.push_str("# TYPE rsttrace_aborts_merged_total counter\n");
    let _ = writeln!(s, "rsttrace_aborts_merged_total {}", stats.aborts_merged);
    if let Some(st) = stats.stacks {
        s.push_str("# HELP rsttrace_stack_errors_total --stack: stacks not captured or unreadable, frames not symbolized.\n");
        s.push_str("# TYPE rsttrace_stack_errors_total counter\n");
        for (kind, n) in [
            ("not_captured", st.not_captured),
            ("missing", st.missing),
            ("unsymbolized_frame", st.unsymbolized),
        ] {
            let _ = writeln!(s, "rsttrace_stack_errors_total{{kind=\"{kind}\"}} {n}");
        }
        s.push_str("# HELP rsttrace_stacks_skipped_total --stack: events written without stacks, over --stack-budget.\n");
        s.push_str("# TYPE rsttrace_stacks_skipped_total counter\n");
        let _ = writeln!(s, "rsttrace_stacks_skipped_total {}", st.skipped);
    }
    s.push_str("# HELP rsttrace_resets_by_local_port_total Resets on the busiest local ports (top N only).\n");
    s.push_str("# TYPE rsttrace_resets_by_local_port_total counter\n");
    let mut ports: Vec<(u16, u64)> = stats.ports().collect();
    ports.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (port, n) in ports.into_iter().take(top_ports) {
        let _ = writeln!(
            s,
            "rsttrace_resets_by_local_port_total{{port=\"{port}\"}} {n}"
        );
    }
    s
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `9100`, `:9100`, `0.0.0.0:9100`, `[::1]:9100`; a bare port binds to
/// 127.0.0.1 so metrics are not exposed to the network by accident.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!(
            "`{s}` is not an address; use PORT (binds 127.0.0.1), or ADDR:PORT such as 0.0.0.0:9100"
        )
    })
}

/// Most connections served at once; past it the oldest is closed. Idle
/// or slow clients cannot hold the endpoint (or our file descriptors): a
/// fresh scrape always gets in.
const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole connection, response included, ends within this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (EMFILE, ENFILE, ENOBUFS), doubled up to the
/// maximum while it keeps failing, instead of spinning on it.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Binds now (so a busy port fails before tracing starts) and serves in the background.
pub async fn serve(addr: SocketAddr, metrics: Shared) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow!("--metrics {addr}: cannot listen: {e}"))?;
    let bound = listener.local_addr().context("metrics listener address")?;
    tokio::spawn(accept_loop(listener, metrics));
    Ok(bound)
}

async fn accept_loop(listener: TcpListener, metrics: Shared) {
    let mut live: VecDeque<AbortHandle> = VecDeque::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut warned = false;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF.0;
                stream
            }
            Err(e) => {
                if !warned {
                    log::warn!("--metrics: accept failed: {e}; backing off");
                    warned = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        live.retain(|h| !h.is_finished());
        while live.len() >= MAX_CONNECTIONS {
            if let Some(oldest) = live.pop_front() {
                oldest.abort();
            }
        }
        let metrics = metrics.clone();
        let task = tokio::spawn(async move {
            let service = service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(8192)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
        live.push_back(task.abort_handle());
    }
}

fn respond(req: &Request<Incoming>, metrics: &Shared) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics" | "/") => (
            StatusCode::OK,
            metrics.lock().map(|m| m.render()).unwrap_or_default(),
        ),
        _ => (StatusCode::NOT_FOUND, "try GET /metrics\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::fixtures::record;

    #[test]
    fn counts_render_as_prometheus_text() {
        let mut m = Stats::default();
        m.add(&record());
        m.add(&record());
        let mut other = record();
        other.event.local = "127.0.0.1:9999".parse().unwrap();
        m.add(&other);
        m.lost = 3;
        m.kernel_drops.history_evicted = 4;
        let text = render(&m, 1);
        assert!(
            text.contains("rsttrace_kernel_drops_total{kind=\"history_evicted\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("rsttrace_kernel_drops_total{kind=\"packets_lost\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "rsttrace_resets_total{direction=\"sent\",cause=\"close_unread_data\",kernel_reason=\"TCP_ABORT_ON_CLOSE\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("rsttrace_lost_events_total 3"), "{text}");
        // Top-1 port only: cardinality stays bounded.
        assert!(
            text.contains("rsttrace_resets_by_local_port_total{port=\"8080\"} 2"),
            "{text}"
        );
        assert!(!text.contains("port=\"9999\""), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.split(' ').count(), 2, "bad sample line {line:?}");
        }
    }

    /// The summary and the metrics render the same counts, from one
    /// update per event.
    #[test]
    fn one_update_shows_in_the_summary_and_the_metrics() {
        let mut stats = Stats::default();
        stats.add(&record());
        let mut rec = record();
        rec.cause.id = crate::model::cause::CauseId::PeerReset;
        rec.event.direction = crate::model::event::Direction::Received;
        rec.event.kernel_reason = None;
        rec.event.local = "127.0.0.1:9999".parse().unwrap();
        stats.add(&rec);
        let summary = crate::output::summary::render(&stats, crate::model::explain::Lang::En);
        let metrics = render(&stats, 10);
        for (row, sample) in [
            (
                "  close_unread_data    sent              1",
                "rsttrace_resets_total{direction=\"sent\",cause=\"close_unread_data\",kernel_reason=\"TCP_ABORT_ON_CLOSE\"} 1",
            ),
            (
                "  peer_reset           received          1",
                "rsttrace_resets_total{direction=\"received\",cause=\"peer_reset\",kernel_reason=\"\"} 1",
            ),
        ] {
            assert!(summary.lines().any(|l| l == row), "{row:?} in\n{summary}");
            assert!(
                metrics.lines().any(|l| l == sample),
                "{sample:?} in\n{metrics}"
            );
        }
        assert!(
            summary.contains("top local ports: 8080 (1), 9999 (1)"),
            "{summary}"
        );
        assert!(metrics.contains("rsttrace_resets_by_local_port_total{port=\"9999\"} 1"));
        let json = crate::output::summary::to_json(&stats);
        assert_eq!(
            (json["sent"].as_u64(), json["received"].as_u64()),
            (Some(1), Some(1))
        );
    }

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_addr("9100"), Ok("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(parse_addr(":9100"), Ok("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(parse_addr("0.0.0.0:80"), Ok("0.0.0.0:80".parse().unwrap()));
        assert_eq!(parse_addr("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        assert!(parse_addr("70000").unwrap_err().contains("ADDR:PORT"));
        assert!(parse_addr("host").is_err());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

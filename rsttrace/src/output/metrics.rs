//! `--metrics ADDR:PORT`: Prometheus text exposition of reset counts.
//!
//! Label cardinality is bounded by construction: `cause` and `direction` are
//! closed sets, `kernel_reason` comes from the kernel's enum, and ports are
//! only exported as a top-N (`--metrics-top-ports`).

use std::collections::{BTreeMap, HashMap, VecDeque};
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

use crate::record::Classified;

#[derive(Debug, Default)]
pub struct Metrics {
    resets: BTreeMap<(&'static str, &'static str, String), u64>,
    by_local_port: HashMap<u16, u64>,
    pub lost: u64,
    pub filtered_kernel: u64,
    pub filtered_userspace: u64,
    /// `--stack` only.
    pub stacks: Option<crate::output::summary::StackSummary>,
    pub kernel_drops: crate::collect::counters::KernelDrops,
    pub aborts_merged: u64,
    top_ports: usize,
}

pub type Shared = Arc<Mutex<Metrics>>;

impl Metrics {
    pub fn new(top_ports: usize) -> Metrics {
        Metrics {
            top_ports,
            ..Metrics::default()
        }
    }

    pub fn add(&mut self, rec: &Classified) {
        let e = &rec.event;
        let reason = e.reason().unwrap_or("").to_owned();
        *self
            .resets
            .entry((e.direction.as_str(), rec.cause.id.id(), reason))
            .or_default() += 1;
        // At most 65536 entries: bounded by the port space.
        *self.by_local_port.entry(e.local.port()).or_default() += 1;
    }

    /// Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP rsttrace_resets_total TCP resets seen, by direction, cause and kernel reason.\n");
        s.push_str("# TYPE rsttrace_resets_total counter\n");
        for ((direction, cause, reason), n) in &self.resets {
            let _ = writeln!(
                s,
                "rsttrace_resets_total{{direction=\"{direction}\",cause=\"{cause}\",kernel_reason=\"{}\"}} {n}",
                escape_label(reason)
            );
        }
        s.push_str("# HELP rsttrace_lost_events_total Events the kernel could not queue (ring buffer full).\n");
        s.push_str("# TYPE rsttrace_lost_events_total counter\n");
        let _ = writeln!(s, "rsttrace_lost_events_total {}", self.lost);
        s.push_str("# HELP rsttrace_filtered_events_total Events dropped by filters.\n");
        s.push_str("# TYPE rsttrace_filtered_events_total counter\n");
        let _ = writeln!(
            s,
            "rsttrace_filtered_events_total{{where=\"kernel\"}} {}",
            self.filtered_kernel
        );
        let _ = writeln!(
            s,
            "rsttrace_filtered_events_total{{where=\"userspace\"}} {}",
            self.filtered_userspace
        );
        s.push_str("# HELP rsttrace_kernel_drops_total What the kernel side could not capture or remember, by kind.\n");
        s.push_str("# TYPE rsttrace_kernel_drops_total counter\n");
        for (kind, _, n) in self.kernel_drops.kinds() {
            let _ = writeln!(s, "rsttrace_kernel_drops_total{{kind=\"{kind}\"}} {n}");
        }
        s.push_str("# HELP rsttrace_aborts_merged_total Error reports merged into the RST reported just before them.\n");
        s.push_str("# TYPE rsttrace_aborts_merged_total counter\n");
        let _ = writeln!(s, "rsttrace_aborts_merged_total {}", self.aborts_merged);
        if let Some(st) = self.stacks {
            s.push_str("# HELP rsttrace_stack_errors_total --stack: stacks not captured or unreadable, frames not symbolized.\n");
            s.push_str("# TYPE rsttrace_stack_errors_total counter\n");
            for (kind, n) in [
                ("not_captured", st.not_captured),
                ("missing", st.missing),
                ("unsymbolized_frame", st.unsymbolized),
            ] {
                let _ = writeln!(s, "rsttrace_stack_errors_total{{kind=\"{kind}\"}} {n}");
            }
        }
        s.push_str("# HELP rsttrace_resets_by_local_port_total Resets on the busiest local ports (top N only).\n");
        s.push_str("# TYPE rsttrace_resets_by_local_port_total counter\n");
        let mut ports: Vec<(&u16, &u64)> = self.by_local_port.iter().collect();
        ports.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (port, n) in ports.into_iter().take(self.top_ports) {
            let _ = writeln!(
                s,
                "rsttrace_resets_by_local_port_total{{port=\"{port}\"}} {n}"
            );
        }
        s
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `9100`, `:9100`, `0.0.0.0:9100`, `[::1]:9100`; a bare port binds to
/// 127.0.0.1 so metrics are not exposed to the network by accident.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
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
        let mut m = Metrics::new(1);
        m.add(&record());
        m.add(&record());
        let mut other = record();
        other.event.local = "127.0.0.1:9999".parse().unwrap();
        m.add(&other);
        m.lost = 3;
        m.kernel_drops.history_evicted = 4;
        let text = m.render();
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

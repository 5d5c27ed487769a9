//! `--otlp URL`: every event as an OpenTelemetry log record and the run's
//! per-cause counts (`output::stats`, which the summary and `--metrics`
//! render too) as OTLP metrics, over OTLP/HTTP with protobuf bodies
//! (the collector's default, port 4318), built from OpenTelemetry's own
//! generated types.
//!
//! Tracing never waits for the collector: events go into a bounded queue
//! with `try_send`, and an exporter thread with its own runtime batches
//! them, posts them, and retries with exponential back-off. Whatever cannot
//! be queued or delivered is counted as dropped (summary and metrics), never
//! waited for. At exit the queue gets a short grace period to drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::sync::mpsc;

use crate::model::event::{Direction, TcpState};
use crate::model::explain::Lang;
use crate::output::stats;
use crate::record::Classified;

/// Records waiting for the exporter; beyond this they are dropped.
const QUEUE: usize = 8192;
/// Records per request.
const BATCH: usize = 512;
/// How long the first record of a batch waits for company.
const LINGER: Duration = Duration::from_millis(500);
/// Counters are sent this often (and once at exit).
const METRICS_EVERY: Duration = Duration::from_secs(10);
/// Attempts per request, and the back-off between them (doubling).
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Connect and whole-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// What the exporter may take at exit to deliver what is queued.
const GRACE: Duration = Duration::from_secs(2);

/// Where to send: an `http://` collector; `/v1/logs` and `/v1/metrics` are
/// appended to its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path prefix without a trailing `/` (usually empty).
    pub(crate) base: String,
}

/// `--otlp URL`: `http://HOST[:PORT][/PATH]`, the port 4318 by default.
pub(crate) fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let rest = s.strip_prefix("http://").ok_or_else(|| {
        if s.starts_with("https://") {
            format!(
                "{s}: https is not supported; point --otlp at a collector on the node or a \
                 sidecar over http (e.g. http://localhost:4318)"
            )
        } else {
            format!("{s}: not an http:// URL; use e.g. http://otel-collector:4318")
        }
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{s}: bad port `{p}`"))?,
        ),
        _ => (authority, 4318),
    };
    if host.is_empty() {
        return Err(format!("{s}: no host; use e.g. http://otel-collector:4318"));
    }
    // A signal path given by habit (…/v1/logs) is the collector's base.
    let base = path
        .trim_end_matches('/')
        .trim_end_matches("/v1/logs")
        .trim_end_matches("/v1/metrics")
        .trim_end_matches('/');
    Ok(Endpoint {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        base: base.to_owned(),
    })
}

/// Counters the tracer and the exporter share.
#[derive(Default)]
struct Shared {
    /// Records not delivered: queue full, retries exhausted, or the
    /// collector refused them.
    dropped: AtomicU64,
    /// The tracer's counts (every event, exported or not), which the
    /// summary and `--metrics` render too.
    stats: stats::Shared,
}

/// The tracer's handle: hands records to the exporter thread.
pub(crate) struct Exporter {
    queue: Option<mpsc::Sender<LogRecord>>,
    shared: Arc<Shared>,
    lang: Lang,
    ephemeral: std::ops::RangeInclusive<u16>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Exporter {
    /// Starts the exporter thread; nothing is sent until the first event
    /// (or the first metrics tick).
    pub(crate) fn start(endpoint: Endpoint, lang: Lang, stats: stats::Shared) -> Result<Exporter> {
        let (queue, records) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            dropped: AtomicU64::new(0),
            stats,
        });
        let (done_tx, done) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("--otlp: cannot start the exporter's runtime")?;
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                runtime.block_on(run(endpoint, records, thread_shared));
                let _ = done_tx.send(());
            })
            .context("--otlp: cannot start the exporter thread")?;
        Ok(Exporter {
            queue: Some(queue),
            shared,
            lang,
            ephemeral: ephemeral_ports(),
            done,
        })
    }

    /// Queues one event; never blocks. A full queue drops it (counted).
    pub(crate) fn export(&self, rec: &Classified) {
        let Some(queue) = &self.queue else { return };
        if queue
            .try_send(log_record(rec, self.lang, &self.ephemeral))
            .is_err()
        {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Closes the queue and gives the exporter its grace period to deliver
    /// what is queued and the final counters; what it could not deliver by
    /// then is counted as dropped.
    pub(crate) fn finish(&mut self) {
        if self.queue.take().is_some() {
            // The exporter's own deadline is GRACE; this bound covers a
            // request already under way when it passed.
            let _ = self.done.recv_timeout(GRACE + REQUEST_TIMEOUT);
        }
    }
}

/// The exporter thread: batches, posts, retries, counts.
async fn run(endpoint: Endpoint, mut records: mpsc::Receiver<LogRecord>, shared: Arc<Shared>) {
    let mut client = Client::new(endpoint);
    let resource = resource();
    let start = now_nanos();
    let mut next_metrics = Instant::now() + METRICS_EVERY;
    let mut deadline: Option<Instant> = None;
    loop {
        let mut batch = Vec::new();
        let first = tokio::time::timeout_at(next_metrics.into(), records.recv()).await;
        let closed = match first {
            Ok(Some(record)) => {
                batch.push(record);
                // Gather what arrives within LINGER, up to a full batch.
                let until = tokio::time::Instant::now() + LINGER;
                let mut closed = false;
                while batch.len() < BATCH {
                    match tokio::time::timeout_at(until, records.recv()).await {
                        Ok(Some(record)) => batch.push(record),
                        Ok(None) => {
                            closed = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                closed
            }
            Ok(None) => true,
            Err(_) => false,
        };
        if closed && deadline.is_none() {
            deadline = Some(Instant::now() + GRACE);
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let body = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(resource.clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope()),
                        log_records: batch,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            }
            .encode_to_vec();
            if client
                .post_with_retry("/v1/logs", body, deadline)
                .await
                .is_err()
            {
                shared.dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
        if closed || Instant::now() >= next_metrics {
            let body = metrics_request(&shared, &resource, start).encode_to_vec();
            // Cumulative counters: a failed send is made good by the next.
            let _ = client.post_with_retry("/v1/metrics", body, deadline).await;
            next_metrics = Instant::now() + METRICS_EVERY;
        }
        if closed {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // Out of time: what is still queued will not be delivered.
                while records.try_recv().is_ok() {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            if records.is_empty() {
                return;
            }
        }
    }
}

/// One HTTP/1.1 connection to the collector, reopened when it breaks.
struct Client {
    endpoint: Endpoint,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    warned: bool,
}

#[derive(Debug)]
enum Failure {
    /// Worth another attempt (connection refused, 429, 502-504, timeout).
    Retry(String),
    /// The collector refused the data itself (other 4xx/5xx).
    Refused(String),
}

impl Client {
    fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            sender: None,
            warned: false,
        }
    }

    async fn post_with_retry(
        &mut self,
        signal: &str,
        body: Vec<u8>,
        deadline: Option<Instant>,
    ) -> Result<(), Failure> {
        let body = Bytes::from(body);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let outcome =
                tokio::time::timeout(REQUEST_TIMEOUT, self.post(signal, body.clone())).await;
            let failure = match outcome {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(f)) => f,
                Err(_) => Failure::Retry("timed out".into()),
            };
            if let Failure::Retry(_) = failure {
                // The connection may be what failed.
                self.sender = None;
            }
            let out_of_time = deadline.is_some_and(|d| Instant::now() + backoff >= d);
            match failure {
                Failure::Retry(why) if attempt < ATTEMPTS && !out_of_time => {
                    log::debug!("otlp {signal}: {why}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                other => {
                    let (Failure::Retry(why) | Failure::Refused(why)) = &other;
                    // Once: a collector that is down must not flood stderr.
                    if !self.warned {
                        log::warn!(
                            "OTLP export to {} failing ({why}); undelivered records are \
                             counted as dropped, tracing continues",
                            describe(&self.endpoint)
                        );
                        self.warned = true;
                    }
                    return Err(other);
                }
            }
        }
    }

    async fn post(&mut self, signal: &str, body: Bytes) -> Result<(), Failure> {
        let sender = match &mut self.sender {
            Some(s) if !s.is_closed() => s,
            _ => self.sender.insert(self.connect().await?),
        };
        sender
            .ready()
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let e = &self.endpoint;
        let request = hyper::Request::post(format!("{}{signal}", e.base))
            .header(hyper::header::HOST, format!("{}:{}", e.host, e.port))
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| Failure::Refused(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let status = response.status();
        // Read the (small) body so the connection can carry the next request.
        let _ = response.into_body().collect().await;
        match status.as_u16() {
            200..=299 => Ok(()),
            429 | 502..=504 => Err(Failure::Retry(format!("HTTP {status}"))),
            _ => Err(Failure::Refused(format!("HTTP {status}"))),
        }
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, Failure> {
        let retry = |e: std::io::Error| Failure::Retry(e.to_string());
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((self.endpoint.host.as_str(), self.endpoint.port))
                .await
                .map_err(retry)?
                .collect();
        let addr = addrs
            .first()
            .ok_or_else(|| Failure::Retry("no address".into()))?;
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(retry)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| Failure::Retry(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

fn now_nanos() -> u64 {
    nanos(SystemTime::now())
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "rsttrace".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// Who is reporting: the service, the host and (in the DaemonSet, from
/// the downward API) the Kubernetes node.
fn resource() -> Resource {
    let mut attributes = vec![
        string("service.name", "rsttrace"),
        string("service.version", env!("CARGO_PKG_VERSION")),
    ];
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if !hostname.trim().is_empty() {
        attributes.push(string("host.name", hostname.trim()));
    }
    if let Ok(node) = std::env::var("NODE_NAME")
        && !node.is_empty()
    {
        attributes.push(string("k8s.node.name", node));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// The kernel's ephemeral port range (ip_local_port_range), read once.
fn ephemeral_ports() -> std::ops::RangeInclusive<u16> {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut ports = text
        .split_whitespace()
        .filter_map(|p| p.parse::<u16>().ok());
    match (ports.next(), ports.next()) {
        (Some(lo), Some(hi)) if lo <= hi => lo..=hi,
        _ => 32768..=60999,
    }
}

/// Whether the local end is the server, when the event shows it: it
/// listened, or it was connecting, or it answered a bare SYN; else the one
/// end whose port is outside the ephemeral range listens. None when both
/// ends look alike: `server.*`/`client.*` are then left out rather than guessed.
fn local_is_server(rec: &Classified, ephemeral: &std::ops::RangeInclusive<u16>) -> Option<bool> {
    let e = &rec.event;
    if matches!(
        e.state,
        TcpState::LISTEN | TcpState::SYN_RECV | TcpState::NEW_SYN_RECV
    ) {
        return Some(true);
    }
    if e.state == TcpState::SYN_SENT {
        return Some(false);
    }
    // A sent RST answering a segment: a bare SYN came to us.
    if let Some(p) = e.packet
        && e.direction == Direction::Sent
        && p.flags.has(crate::model::event::TcpFlags::SYN)
    {
        return Some(!p.flags.has(crate::model::event::TcpFlags::ACK));
    }
    match (
        ephemeral.contains(&e.local.port()),
        ephemeral.contains(&e.remote.port()),
    ) {
        (false, true) => Some(true),
        (true, false) => Some(false),
        _ => None,
    }
}

/// One event as a log record: the OpenTelemetry semantic conventions for
/// the attributes that have one, `rsttrace.*` for the rest.
pub(crate) fn log_record(
    rec: &Classified,
    lang: Lang,
    ephemeral: &std::ops::RangeInclusive<u16>,
) -> LogRecord {
    let e = &rec.event;
    let mut attributes = vec![
        string("network.transport", "tcp"),
        string(
            "network.type",
            if e.local.is_ipv4() { "ipv4" } else { "ipv6" },
        ),
    ];
    if let Some(local_server) = local_is_server(rec, ephemeral) {
        let (server, client) = if local_server {
            (e.local, e.remote)
        } else {
            (e.remote, e.local)
        };
        attributes.extend([
            string("server.address", server.ip().to_string()),
            int("server.port", server.port().into()),
            string("client.address", client.ip().to_string()),
            int("client.port", client.port().into()),
        ]);
    }
    attributes.extend([
        string("network.local.address", e.local.ip().to_string()),
        int("network.local.port", e.local.port().into()),
        string("network.peer.address", e.remote.ip().to_string()),
        int("network.peer.port", e.remote.port().into()),
        string("rsttrace.cause", rec.cause.id.id()),
        string("rsttrace.confidence", rec.cause.confidence.as_str()),
        string("rsttrace.direction", e.direction.as_str()),
        string("rsttrace.state", e.state.name()),
        string("rsttrace.hook", e.hook),
    ]);
    // Names from files and processes: escaped as in every other output.
    let hostile = |s: &str| crate::model::text::escape_control(s).into_owned();
    if let Some(reason) = e.reason() {
        attributes.push(string("rsttrace.kernel_reason", hostile(reason)));
    }
    if !rec.cause.evidence.is_empty() {
        attributes.push(string("rsttrace.evidence", rec.cause.evidence.to_string()));
    }
    if let Some(p) = &e.process {
        attributes.push(int("process.pid", p.pid.into()));
        attributes.push(string("process.executable.name", hostile(&p.comm)));
    }
    if let Some(netns) = e.netns {
        attributes.push(int("rsttrace.netns", netns.into()));
    }
    let container = rec.owner_proc.as_ref().and_then(|p| p.container.as_ref());
    if let Some(c) = container {
        attributes.push(string("container.runtime.name", c.runtime));
        if let Some(id) = &c.id {
            attributes.push(string("container.id", id.as_str()));
        }
        if let Some(uid) = &c.pod_uid {
            attributes.push(string("k8s.pod.uid", uid.as_str()));
        }
        if let Some(n) = c.names.as_deref() {
            for (key, value) in [
                ("container.name", &n.name),
                ("container.image.name", &n.image),
                ("k8s.pod.name", &n.pod),
                ("k8s.namespace.name", &n.namespace),
            ] {
                if let Some(v) = value {
                    attributes.push(string(key, hostile(v)));
                }
            }
        }
    }
    LogRecord {
        time_unix_nano: nanos(e.time),
        observed_time_unix_nano: now_nanos(),
        severity_number: SeverityNumber::Warn as i32,
        severity_text: "WARN".into(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(format!(
                "{} {}: {}",
                e.direction.as_str(),
                rec.cause.id.id(),
                crate::model::explain::explanation(rec.cause.id, lang)
            ))),
        }),
        attributes,
        event_name: "rsttrace.reset".into(),
        ..Default::default()
    }
}

/// `rsttrace.resets{rsttrace.cause, rsttrace.direction}` and
/// `rsttrace.otlp.dropped`: cumulative, monotonic sums since start.
fn metrics_request(
    shared: &Shared,
    resource: &Resource,
    start: u64,
) -> ExportMetricsServiceRequest {
    let now = now_nanos();
    let point = |attributes: Vec<KeyValue>, n: u64| NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsInt(
            i64::try_from(n).unwrap_or(i64::MAX),
        )),
        ..Default::default()
    };
    let sum = |name: &str, description: &str, unit: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.into(),
        description: description.into(),
        unit: unit.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let counts = stats::lock(&shared.stats).by_cause();
    let resets: Vec<NumberDataPoint> = counts
        .iter()
        .map(|((cause, direction), n)| {
            point(
                vec![
                    string("rsttrace.cause", cause.id()),
                    string("rsttrace.direction", direction.as_str()),
                ],
                *n,
            )
        })
        .collect();
    let dropped = shared.dropped.load(Ordering::Relaxed);
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: vec![
                    sum(
                        "rsttrace.resets",
                        "TCP resets (and aborts without one) by cause and direction",
                        "{reset}",
                        resets,
                    ),
                    sum(
                        "rsttrace.otlp.dropped",
                        "Log records not delivered to the collector",
                        "{record}",
                        vec![point(Vec::new(), dropped)],
                    ),
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// `--otlp` given, for error messages.
pub(crate) fn describe(endpoint: &Endpoint) -> String {
    format!(
        "http://{}:{}{}",
        endpoint.host, endpoint.port, endpoint.base
    )
}

#[cfg(test)]
mod tests;

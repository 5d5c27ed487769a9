//! `--otlp`: a collector stand-in started here on 127.0.0.1 decodes the
//! OTLP/HTTP protobuf requests; every event of a real scenario must arrive
//! as a log record with its attributes, and the counters as metrics. With
//! the collector down, tracing goes on and the records are counted as
//! dropped.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use serde_json::Value;

#[derive(Default)]
struct Received {
    logs: Vec<ExportLogsServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    /// Requests that were not what a collector accepts.
    bad: Vec<String>,
}

/// An OTLP/HTTP receiver: HTTP/1.1 with keep-alive, answers 200.
fn start_receiver() -> (u16, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Received::default()));
    let shared = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let shared = shared.clone();
            std::thread::spawn(move || serve(conn, &shared));
        }
    });
    (port, received)
}

fn serve(conn: TcpStream, received: &Mutex<Received>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        let mut content_type = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "content-type" => content_type = value.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        {
            let mut r = received.lock().unwrap();
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            if !request_line.starts_with("POST ") || content_type != "application/x-protobuf" {
                r.bad.push(format!("{request_line} {content_type}"));
            } else if path == "/v1/logs" {
                match ExportLogsServiceRequest::decode(body.as_slice()) {
                    Ok(req) => r.logs.push(req),
                    Err(e) => r.bad.push(format!("logs: {e}")),
                }
            } else if path == "/v1/metrics" {
                match ExportMetricsServiceRequest::decode(body.as_slice()) {
                    Ok(req) => r.metrics.push(req),
                    Err(e) => r.bad.push(format!("metrics: {e}")),
                }
            } else {
                r.bad.push(format!("path {path}"));
            }
        }
        if out
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

fn records(r: &Received) -> Vec<LogRecord> {
    r.logs
        .iter()
        .flat_map(|req| &req.resource_logs)
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| sl.log_records.clone())
        .collect()
}

fn attr(r: &LogRecord, key: &str) -> Option<Any> {
    r.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn s(v: &str) -> Option<Any> {
    Some(Any::StringValue(v.into()))
}

fn i(v: &Value) -> Option<Any> {
    Some(Any::IntValue(v.as_i64().unwrap()))
}

/// The record exported for `event`: same cause, direction and ports.
fn record_of<'a>(records: &'a [LogRecord], event: &Value) -> Option<&'a LogRecord> {
    records.iter().find(|r| {
        attr(r, "rsttrace.cause") == s(event["cause"].as_str().unwrap())
            && attr(r, "rsttrace.direction") == s(event["direction"].as_str().unwrap())
            && attr(r, "network.local.port") == i(&event["local_port"])
            && attr(r, "network.peer.port") == i(&event["remote_port"])
    })
}

#[test]
fn otlp_receives_every_event_with_its_attributes() {
    let Some(mut sc) = Scenario::new("otlp_receives_every_event_with_its_attributes").start()
    else {
        return;
    };
    let (collector, received) = start_receiver();
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let closed = free_port();
    let url = format!("http://127.0.0.1:{collector}");
    sc.trace(&[
        "--port",
        &port.to_string(),
        "--port",
        &closed.to_string(),
        "--otlp",
        &url,
    ]);
    // A refused connect, and a close() with unread data.
    TcpStream::connect(loopback(closed)).expect_err("nothing listens");
    let mut client = TcpStream::connect(loopback(port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.write_all(&[7u8; 100]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(server);
    let _ = client.read(&mut [0u8; 16]);
    let events = sc.stop();
    let events: Vec<&Value> = events.iter().filter(|e| e["gap"].is_null()).collect();
    assert!(
        events.iter().any(|e| e["cause"] == "close_unread_data"),
        "{events:?}"
    );

    let r = received.lock().unwrap();
    assert!(r.bad.is_empty(), "bad requests: {:?}", r.bad);
    let records = records(&r);
    assert_eq!(records.len(), events.len(), "one record per event");
    for event in &events {
        let rec = record_of(&records, event)
            .unwrap_or_else(|| panic!("no record for {event}; got {records:#?}"));
        assert_eq!(attr(rec, "network.transport"), s("tcp"));
        assert_eq!(attr(rec, "network.type"), s("ipv4"));
        assert_eq!(
            attr(rec, "rsttrace.confidence"),
            s(event["confidence"].as_str().unwrap())
        );
        assert_eq!(
            attr(rec, "rsttrace.hook"),
            s(event["hook"].as_str().unwrap())
        );
        if let Some(reason) = event["kernel_reason"].as_str() {
            assert_eq!(attr(rec, "rsttrace.kernel_reason"), s(reason));
        }
        if event["pid"].is_number() {
            assert_eq!(attr(rec, "process.pid"), i(&event["pid"]));
            assert_eq!(
                attr(rec, "process.executable.name"),
                s(event["comm"].as_str().unwrap())
            );
        }
        let time = humantime::parse_rfc3339(event["time"].as_str().unwrap()).unwrap();
        let nanos = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        assert_eq!(u128::from(rec.time_unix_nano), nanos);
        assert_eq!(rec.event_name, "rsttrace.reset");
    }
    // The refused connect: the closed port is the server's, from both sides
    // (the SYN came in; the connect went out). The unread-data reset names
    // a server only when its ports tell (the listener's is ephemeral here).
    for event in &events {
        let rec = record_of(&records, event).unwrap();
        match event["cause"].as_str().unwrap() {
            "port_not_open" | "peer_refused" => {
                assert_eq!(
                    attr(rec, "server.port"),
                    Some(Any::IntValue(closed.into())),
                    "{event}"
                );
                assert_eq!(attr(rec, "server.address"), s("127.0.0.1"));
            }
            _ => {
                let server = attr(rec, "server.port");
                assert!(
                    server.is_none() || server == Some(Any::IntValue(port.into())),
                    "{event}"
                );
            }
        }
    }
    // Who reports: the resource.
    let resource = r.logs[0].resource_logs[0].resource.as_ref().unwrap();
    assert!(
        resource.attributes.iter().any(|kv| kv.key == "service.name"
            && kv.value.clone().and_then(|v| v.value) == s("rsttrace"))
    );

    // The final counters count the same events.
    let last = r.metrics.last().expect("metrics at exit");
    let metrics = &last.resource_metrics[0].scope_metrics[0].metrics;
    let resets = metrics
        .iter()
        .find(|m| m.name == "rsttrace.resets")
        .unwrap();
    let Some(metric::Data::Sum(sum)) = &resets.data else {
        panic!("rsttrace.resets is not a sum")
    };
    let total: i64 = sum
        .data_points
        .iter()
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(n)) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(total, events.len() as i64);
}

#[test]
fn otlp_collector_down_tracing_goes_on_and_drops_are_counted() {
    let Some(mut sc) =
        Scenario::new("otlp_collector_down_tracing_goes_on_and_drops_are_counted").start()
    else {
        return;
    };
    // A port nobody listens on: every connection attempt is refused.
    let collector = free_port();
    let closed = free_port();
    let url = format!("http://127.0.0.1:{collector}");
    sc.trace(&["--port", &closed.to_string(), "--otlp", &url]);
    const CONNECTS: usize = 20;
    for _ in 0..CONNECTS {
        TcpStream::connect(loopback(closed)).expect_err("nothing listens");
    }
    // Tracing does not wait for the exporter: all events are written.
    let written = sc.wait_for(Duration::from_secs(5), |events| {
        events
            .iter()
            .filter(|e| e["cause"] == "peer_refused")
            .count()
            >= CONNECTS
    });
    assert!(written, "events stopped while the collector was down");
    let (events, _, stderr) = sc.stop_with_stderr();
    let events = events.iter().filter(|e| e["gap"].is_null()).count();
    let dropped = summary_event(&stderr)
        .and_then(|s| s["otlp_dropped"].as_u64())
        .unwrap_or_else(|| panic!("no drop count in the summary:\n{stderr}"));
    assert_eq!(
        dropped, events as u64,
        "every record was dropped, and counted:\n{stderr}"
    );
    assert!(stderr.contains("OTLP export to"), "one warning:\n{stderr}");
}

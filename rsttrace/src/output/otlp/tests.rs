use super::*;
use crate::record::fixtures::record;

#[test]
fn endpoints() {
    let e = |host: &str, port, base: &str| Endpoint {
        host: host.into(),
        port,
        base: base.into(),
    };
    assert_eq!(parse_endpoint("http://otel:4318"), Ok(e("otel", 4318, "")));
    assert_eq!(parse_endpoint("http://otel"), Ok(e("otel", 4318, "")));
    assert_eq!(
        parse_endpoint("http://10.0.0.1:9999/otlp/v1/logs"),
        Ok(e("10.0.0.1", 9999, "/otlp"))
    );
    assert_eq!(parse_endpoint("http://[::1]:4318/"), Ok(e("::1", 4318, "")));
    assert!(
        parse_endpoint("https://otel:4318")
            .unwrap_err()
            .contains("https")
    );
    assert!(parse_endpoint("otel:4318").unwrap_err().contains("http://"));
    assert!(
        parse_endpoint("http://otel:0")
            .unwrap_err()
            .contains("port")
    );
    assert!(parse_endpoint("http://:4318").unwrap_err().contains("host"));
}

fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a any_value::Value> {
    r.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[test]
fn a_record_carries_the_semantic_conventions() {
    let rec = record();
    let r = log_record(&rec, Lang::En, &(32768..=60999));
    let s = |v: &str| Some(any_value::Value::StringValue(v.into()));
    assert_eq!(attr(&r, "network.transport").cloned(), s("tcp"));
    assert_eq!(attr(&r, "rsttrace.cause").cloned(), s("close_unread_data"));
    assert_eq!(
        attr(&r, "rsttrace.kernel_reason").cloned(),
        s("TCP_ABORT_ON_CLOSE")
    );
    assert_eq!(
        attr(&r, "process.pid").cloned(),
        Some(any_value::Value::IntValue(7))
    );
    // Local 8080 is no ephemeral port, remote 40000 is: this host serves.
    assert_eq!(
        attr(&r, "server.port").cloned(),
        Some(any_value::Value::IntValue(8080))
    );
    assert_eq!(attr(&r, "client.address").cloned(), s("::1"));
    // A hostile comm is escaped, as in every output.
    assert_eq!(
        attr(&r, "process.executable.name").cloned(),
        s("=cmd|evil\\x1b[2J")
    );
    assert_eq!(r.time_unix_nano, 1_795_000_000_123_456_789);
    // Encodes and decodes as OTLP protobuf.
    let back = LogRecord::decode(r.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn a_connect_from_here_makes_this_host_the_client() {
    let mut rec = record();
    rec.event.state = TcpState::SYN_SENT;
    let r = log_record(&rec, Lang::En, &(32768..=60999));
    assert_eq!(
        attr(&r, "server.port").cloned(),
        Some(any_value::Value::IntValue(40000))
    );
    // Both ends ephemeral, nothing else to go by: no guess.
    rec.event.state = TcpState::CLOSE;
    rec.event.packet = None;
    rec.event.local = "127.0.0.1:41000".parse().unwrap();
    let r = log_record(&rec, Lang::En, &(32768..=60999));
    assert_eq!(attr(&r, "server.port"), None);
    assert!(attr(&r, "network.local.port").is_some());
}

#[test]
fn counters_are_cumulative_sums_by_cause() {
    let shared = Shared::default();
    let mut rec = record();
    rec.cause.id = crate::model::cause::CauseId::PortNotOpen;
    for _ in 0..3 {
        stats::lock(&shared.stats).add(&rec);
    }
    shared.dropped.store(2, Ordering::Relaxed);
    let req = metrics_request(&shared, &resource(), 1);
    let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(metrics[0].name, "rsttrace.resets");
    let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
        panic!("not a sum")
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.data_points[0].value,
        Some(number_data_point::Value::AsInt(3))
    );
    assert_eq!(metrics[1].name, "rsttrace.otlp.dropped");
}

//! What the soak samples while rsttrace runs (RSS, descriptors, a metrics
//! scrape) and what the rotating export left at the end.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

#[derive(Clone, Debug, Default)]
pub(super) struct Row {
    pub(super) at: Duration,
    pub(super) rss_kib: u64,
    pub(super) fds: u64,
    pub(super) resets: u64,
    pub(super) lost: u64,
    pub(super) kernel_drops: u64,
    pub(super) stack_errors: u64,
    pub(super) processes: u64,
    pub(super) scrape_ms: u128,
}

pub(super) fn scrape(port: u16) -> Result<String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    if !text.starts_with("HTTP/1.1 200") {
        bail!("unexpected answer: {}", text.lines().next().unwrap_or(""));
    }
    Ok(text)
}

/// Sum of every sample of `name` in Prometheus text whose labels contain
/// `label` (e.g. `direction="sent"`; "" for all).
pub(super) fn metric_where(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            (rest.starts_with(' ') || rest.starts_with('{')).then_some(rest)
        })
        .filter(|rest| {
            label.is_empty() || rest.split_once(' ').is_some_and(|(l, _)| l.contains(label))
        })
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

pub(super) fn metric_sum(text: &str, name: &str) -> u64 {
    metric_where(text, name, "")
}

pub(super) fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// What the rotating export left: the files kept, their events and gap
/// records; every line must be JSON.
#[derive(Debug, Default)]
pub(super) struct ExportFiles {
    pub(super) files: usize,
    pub(super) bytes: u64,
    pub(super) events: u64,
    pub(super) gaps: u64,
    /// Gap records that report lost events.
    pub(super) gaps_lost: u64,
    pub(super) bad_lines: u64,
}

impl ExportFiles {
    pub(super) fn read(dir: &Path, name: &str) -> Result<ExportFiles> {
        let mut found = ExportFiles::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !file_name.starts_with(name) {
                continue;
            }
            found.files += 1;
            found.bytes += entry.metadata()?.len();
            let text = std::fs::read_to_string(entry.path())?;
            for line in text.lines() {
                match serde_json::from_str::<Value>(line) {
                    Ok(v) if v.get("gap").is_some() => {
                        found.gaps += 1;
                        if v["gap"]["lost"].as_u64().unwrap_or(0) > 0 {
                            found.gaps_lost += 1;
                        }
                    }
                    Ok(_) => found.events += 1,
                    Err(_) => found.bad_lines += 1,
                }
            }
        }
        Ok(found)
    }
}

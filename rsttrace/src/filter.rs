//! User filters → the in-kernel `abi::Filter`. Pure.

use anyhow::{Result, bail};
use rsttrace_ebpf::abi::{
    Filter, MAX_FILTER_CGROUPS, MAX_FILTER_NETNS, MAX_FILTER_PIDS, MAX_FILTER_PORTS,
};

/// What the kernel programs can filter on.
#[derive(Clone, Debug, Default)]
pub(crate) struct KernelScope {
    pub(crate) ports: Vec<u16>,
    pub(crate) pids: Vec<u32>,
    pub(crate) netns: Vec<u32>,
    /// cgroup v2 ids (from `--cgroup` and `--container`).
    pub(crate) cgroups: Vec<u64>,
}

/// Builds the kernel filter; rejects lists the kernel cannot hold.
pub(crate) fn kernel_filter(scope: &KernelScope) -> Result<Filter> {
    let mut f = Filter::ALL;
    let ports = dedup(&scope.ports);
    let pids = dedup(&scope.pids);
    let netns = dedup(&scope.netns);
    let cgroups = dedup(&scope.cgroups);
    if netns.len() > MAX_FILTER_NETNS {
        bail!(
            "--netns was given {} times; at most {MAX_FILTER_NETNS} namespaces can be filtered in the kernel",
            netns.len()
        );
    }
    if cgroups.len() > MAX_FILTER_CGROUPS {
        bail!(
            "--cgroup/--container match {} cgroups (with their descendants); at most \
             {MAX_FILTER_CGROUPS} can be filtered in the kernel: name a more specific cgroup",
            cgroups.len()
        );
    }
    f.netns[..netns.len()].copy_from_slice(&netns);
    f.n_netns = netns.len() as u32;
    f.cgroups[..cgroups.len()].copy_from_slice(&cgroups);
    f.n_cgroups = cgroups.len() as u32;
    if ports.len() > MAX_FILTER_PORTS {
        bail!(
            "--port was given {} times; at most {MAX_FILTER_PORTS} ports can be filtered in the kernel",
            ports.len()
        );
    }
    if pids.len() > MAX_FILTER_PIDS {
        bail!(
            "--pid was given {} times; at most {MAX_FILTER_PIDS} pids can be filtered in the kernel",
            pids.len()
        );
    }
    f.ports[..ports.len()].copy_from_slice(&ports);
    f.n_ports = ports.len() as u32;
    f.pids[..pids.len()].copy_from_slice(&pids);
    f.n_pids = pids.len() as u32;
    Ok(f)
}

fn dedup<T: Ord + Copy>(values: &[T]) -> Vec<T> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    // What the kernel does with these lists is tested where it happens: in
    // tests/filters.rs (port_filter_keeps_other_ports_out).

    fn scope(ports: &[u16], pids: &[u32]) -> KernelScope {
        KernelScope {
            ports: ports.to_vec(),
            pids: pids.to_vec(),
            ..KernelScope::default()
        }
    }

    #[test]
    fn empty_lists_filter_nothing() {
        let f = kernel_filter(&KernelScope::default()).unwrap();
        assert_eq!((f.n_ports, f.n_pids, f.n_netns, f.n_cgroups), (0, 0, 0, 0));
    }

    #[test]
    fn lists_are_deduplicated_into_the_kernel_struct() {
        let mut s = scope(&[8080, 8080, 443], &[7, 7]);
        s.netns = vec![4026531840, 4026531840];
        s.cgroups = vec![9, 3, 9];
        let f = kernel_filter(&s).unwrap();
        assert_eq!(f.n_ports, 2);
        assert_eq!(&f.ports[..2], &[443, 8080]);
        assert_eq!(f.n_pids, 1);
        assert_eq!(f.pids[0], 7);
        assert_eq!((f.n_netns, f.netns[0]), (1, 4026531840));
        assert_eq!((f.n_cgroups, &f.cgroups[..2]), (2, &[3u64, 9][..]));
    }

    #[test]
    fn too_many_values_are_rejected_with_the_flag_name() {
        let ports: Vec<u16> = (1..=17).collect();
        let err = kernel_filter(&scope(&ports, &[])).unwrap_err().to_string();
        assert!(err.contains("--port"), "{err}");
        let pids: Vec<u32> = (1..=17).collect();
        let err = kernel_filter(&scope(&[], &pids)).unwrap_err().to_string();
        assert!(err.contains("--pid"), "{err}");
        let mut s = scope(&[], &[]);
        s.netns = (1..=9).collect();
        let err = kernel_filter(&s).unwrap_err().to_string();
        assert!(err.contains("--netns"), "{err}");
        s.netns.clear();
        s.cgroups = (1..=33).collect();
        let err = kernel_filter(&s).unwrap_err().to_string();
        assert!(err.contains("--cgroup"), "{err}");
    }
}

/// Filters applied in userspace, where the fact is only known there (the
/// cause) or when replaying a file (everything).
#[derive(Clone, Debug, Default)]
pub struct RecordFilter {
    pub(crate) ports: Vec<u16>,
    pub(crate) pids: Vec<u32>,
    pub(crate) causes: Vec<crate::model::cause::CauseId>,
    pub(crate) directions: Vec<crate::model::event::Direction>,
    /// Local (`--sport`) and remote (`--dport`) ports, tcpdump's words.
    pub(crate) sports: Vec<u16>,
    pub(crate) dports: Vec<u16>,
    /// Either end inside one of these networks.
    pub(crate) addrs: Vec<Cidr>,
    /// The owner's (or acting task's) command name, exactly.
    pub(crate) comms: Vec<String>,
    /// Network namespace inodes.
    pub(crate) netns: Vec<u32>,
    /// Container id prefixes (of the owner's container).
    pub(crate) containers: Vec<String>,
    /// Kubernetes pod names and namespaces of the owner's container.
    pub(crate) pods: Vec<String>,
    pub(crate) namespaces: Vec<String>,
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: std::net::IpAddr,
    bits: u8,
}

impl Cidr {
    pub(crate) fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let (net, ip, width) = match (self.net, ip) {
            (V4(n), V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (V6(n), V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        shift >= width || (net >> shift) == (ip >> shift)
    }
}

/// `--addr ADDR|CIDR`.
pub(crate) fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let bad = || {
        format!(
            "`{s}` is not an address or CIDR block; use e.g. 10.0.0.0/8, 192.168.1.7 or 2001:db8::/32"
        )
    };
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let net: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    if bits > max {
        return Err(format!(
            "`{s}`: a prefix length is at most {max} for this address family"
        ));
    }
    Ok(Cidr { net, bits })
}

impl RecordFilter {
    pub(crate) fn matches(&self, rec: &crate::record::Classified) -> bool {
        let e = &rec.event;
        let any = |empty: bool, hit: bool| empty || hit;
        // The kernel's rule: the owner, or the actor where it ran the code.
        let pid = e
            .process
            .as_ref()
            .map(|p| p.pid)
            .or((e.context == crate::model::event::ExecContext::Task).then_some(e.actor.pid));
        any(
            self.ports.is_empty(),
            self.ports.contains(&e.local.port()) || self.ports.contains(&e.remote.port()),
        ) && any(
            self.pids.is_empty(),
            pid.is_some_and(|p| self.pids.contains(&p)),
        ) && any(self.causes.is_empty(), self.causes.contains(&rec.cause.id))
            && any(
                self.directions.is_empty(),
                self.directions.contains(&e.direction),
            )
            && any(
                self.sports.is_empty(),
                self.sports.contains(&e.local.port()),
            )
            && any(
                self.dports.is_empty(),
                self.dports.contains(&e.remote.port()),
            )
            && any(
                self.addrs.is_empty(),
                self.addrs
                    .iter()
                    .any(|c| c.contains(e.local.ip()) || c.contains(e.remote.ip())),
            )
            && any(self.comms.is_empty(), {
                let comm = e.process.as_ref().unwrap_or(&e.actor).comm.as_str();
                self.comms.iter().any(|c| c == comm)
            })
            && any(
                self.netns.is_empty(),
                e.netns.is_some_and(|n| self.netns.contains(&n)),
            )
            && any(self.containers.is_empty(), {
                let id = rec
                    .owner_proc
                    .as_ref()
                    .and_then(|p| p.container.as_ref())
                    .and_then(|c| c.id.as_deref());
                id.is_some_and(|id| self.containers.iter().any(|c| id.starts_with(c.as_str())))
            })
            && ((self.pods.is_empty() && self.namespaces.is_empty()) || {
                let names = rec
                    .owner_proc
                    .as_ref()
                    .and_then(|p| p.container.as_ref())
                    .and_then(|c| c.names.as_deref());
                names.is_some_and(|n| {
                    crate::enrich::containers::names_match(n, &self.pods, &self.namespaces)
                })
            })
    }
}

/// `--cause ID`: a stable cause id.
pub(crate) fn parse_cause(s: &str) -> Result<crate::model::cause::CauseId, String> {
    crate::model::cause::CauseId::from_id(s).ok_or_else(|| {
        let ids: Vec<&str> = crate::model::cause::CauseId::ALL
            .iter()
            .map(|c| c.id())
            .collect();
        format!("unknown cause `{s}`; known causes: {}", ids.join(", "))
    })
}

#[cfg(test)]
mod record_filter_tests {
    use super::*;
    use crate::model::cause::CauseId;
    use crate::model::event::Direction;
    use crate::record::fixtures::record;

    #[test]
    fn each_list_narrows_and_lists_combine() {
        let rec = record();
        assert!(RecordFilter::default().matches(&rec));
        let f =
            |ports: &[u16], pids: &[u32], causes: &[CauseId], dirs: &[Direction]| RecordFilter {
                ports: ports.to_vec(),
                pids: pids.to_vec(),
                causes: causes.to_vec(),
                directions: dirs.to_vec(),
                ..RecordFilter::default()
            };
        assert!(f(&[8080], &[], &[], &[]).matches(&rec));
        assert!(f(&[40000], &[], &[], &[]).matches(&rec));
        assert!(!f(&[1], &[], &[], &[]).matches(&rec));
        assert!(f(&[], &[7], &[], &[]).matches(&rec));
        assert!(!f(&[], &[8], &[], &[]).matches(&rec));
        assert!(f(&[], &[], &[CauseId::CloseUnreadData], &[Direction::Sent]).matches(&rec));
        assert!(!f(&[], &[], &[CauseId::PortNotOpen], &[]).matches(&rec));
        assert!(!f(&[8080], &[], &[], &[Direction::Received]).matches(&rec));
    }

    #[test]
    fn tcpdump_style_ports_addresses_and_names() {
        // 127.0.0.1:8080 -> [::1]:40000, owner comm "=cmd|evil\x1b[2J"
        let rec = record();
        let with = |f: RecordFilter| f.matches(&rec);
        let cidr = |s: &str| parse_cidr(s).unwrap();
        assert!(with(RecordFilter {
            sports: vec![8080],
            ..Default::default()
        }));
        assert!(!with(RecordFilter {
            sports: vec![40000],
            ..Default::default()
        }));
        assert!(with(RecordFilter {
            dports: vec![40000],
            ..Default::default()
        }));
        assert!(with(RecordFilter {
            addrs: vec![cidr("127.0.0.0/8")],
            ..Default::default()
        }));
        assert!(with(RecordFilter {
            addrs: vec![cidr("::1")],
            ..Default::default()
        }));
        assert!(!with(RecordFilter {
            addrs: vec![cidr("10.0.0.0/8")],
            ..Default::default()
        }));
        assert!(with(RecordFilter {
            comms: vec!["=cmd|evil\x1b[2J".into()],
            ..Default::default()
        }));
        assert!(!with(RecordFilter {
            comms: vec!["nginx".into()],
            ..Default::default()
        }));
    }

    #[test]
    fn cidr_blocks() {
        let c = parse_cidr("192.168.0.0/16").unwrap();
        assert!(c.contains("192.168.44.1".parse().unwrap()));
        assert!(!c.contains("192.169.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(
            parse_cidr("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            parse_cidr("2001:db8::/32")
                .unwrap()
                .contains("2001:db8::5".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "host", "10.0.0.0/x"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_causes_list_the_known_ones() {
        let err = parse_cause("nope").unwrap_err();
        assert!(err.contains("port_not_open"), "{err}");
        assert_eq!(parse_cause("linger_zero"), Ok(CauseId::LingerZero));
    }
}

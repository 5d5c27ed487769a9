//! User filters → the in-kernel `abi::Filter`. Pure.

use anyhow::{Result, bail};
use rsttrace_ebpf::abi::{Filter, MAX_FILTER_PIDS, MAX_FILTER_PORTS};

/// Builds the kernel filter; rejects lists the kernel cannot hold.
pub fn kernel_filter(ports: &[u16], pids: &[u32]) -> Result<Filter> {
    let mut f = Filter::ALL;
    let ports = dedup(ports);
    let pids = dedup(pids);
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

/// The same predicate the kernel applies, for `rsttrace read` and for tests
/// that check the two agree.
pub fn matches(f: &Filter, local_port: u16, remote_port: u16, tgid: Option<u32>) -> bool {
    let ports = &f.ports[..f.n_ports as usize];
    let pids = &f.pids[..f.n_pids as usize];
    let port_ok = ports.is_empty() || ports.contains(&local_port) || ports.contains(&remote_port);
    let pid_ok = pids.is_empty() || tgid.is_some_and(|p| pids.contains(&p));
    port_ok && pid_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_filter_matches_everything() {
        let f = kernel_filter(&[], &[]).unwrap();
        assert!(matches(&f, 1, 2, None));
    }

    #[test]
    fn ports_match_either_end_and_pids_need_a_known_task() {
        let f = kernel_filter(&[8080, 8080, 443], &[]).unwrap();
        assert_eq!(f.n_ports, 2);
        assert!(matches(&f, 8080, 5, None));
        assert!(matches(&f, 5, 443, None));
        assert!(!matches(&f, 5, 6, None));
        let f = kernel_filter(&[], &[7]).unwrap();
        assert!(matches(&f, 1, 2, Some(7)));
        assert!(!matches(&f, 1, 2, Some(8)));
        assert!(!matches(&f, 1, 2, None));
    }

    #[test]
    fn port_and_pid_lists_are_anded() {
        let f = kernel_filter(&[80], &[7]).unwrap();
        assert!(matches(&f, 80, 1, Some(7)));
        assert!(!matches(&f, 80, 1, Some(8)));
        assert!(!matches(&f, 81, 1, Some(7)));
    }

    #[test]
    fn too_many_values_are_rejected_with_the_flag_name() {
        let ports: Vec<u16> = (1..=17).collect();
        let err = kernel_filter(&ports, &[]).unwrap_err().to_string();
        assert!(err.contains("--port"), "{err}");
        let pids: Vec<u32> = (1..=17).collect();
        let err = kernel_filter(&[], &pids).unwrap_err().to_string();
        assert!(err.contains("--pid"), "{err}");
    }
}

/// Filters applied in userspace, where the fact is only known there (the
/// cause) or when replaying a file (everything).
#[derive(Clone, Debug, Default)]
pub struct RecordFilter {
    pub ports: Vec<u16>,
    pub pids: Vec<u32>,
    pub causes: Vec<crate::cause::CauseId>,
    pub directions: Vec<crate::event::Direction>,
}

impl RecordFilter {
    pub fn matches(&self, rec: &crate::cause::Classified) -> bool {
        let e = &rec.event;
        let any = |empty: bool, hit: bool| empty || hit;
        // The kernel's rule: the owner, or the actor where it ran the code.
        let pid = e
            .process
            .as_ref()
            .map(|p| p.pid)
            .or((e.context == crate::event::ExecContext::Task).then_some(e.actor.pid));
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
    }
}

/// `--cause ID`: a stable cause id.
pub fn parse_cause(s: &str) -> Result<crate::cause::CauseId, String> {
    crate::cause::CauseId::from_id(s).ok_or_else(|| {
        let ids: Vec<&str> = crate::cause::CauseId::ALL.iter().map(|c| c.id()).collect();
        format!("unknown cause `{s}`; known causes: {}", ids.join(", "))
    })
}

#[cfg(test)]
mod record_filter_tests {
    use super::*;
    use crate::cause::CauseId;
    use crate::event::Direction;
    use crate::output::fixtures::record;

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
    fn unknown_causes_list_the_known_ones() {
        let err = parse_cause("nope").unwrap_err();
        assert!(err.contains("port_not_open"), "{err}");
        assert_eq!(parse_cause("linger_zero"), Ok(CauseId::LingerZero));
    }
}

//! What a guest run said: the markers init.sh prints and libtest's lines,
//! parsed from the serial console.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use super::MARK;
use crate::causes;

#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub kernel: Option<String>,
    /// test name → "ok" | "FAILED" | "ignored".
    pub tests: BTreeMap<String, String>,
    /// Tests that cannot work on this kernel → why (they report a
    /// `not_applicable` row and pass without asserting the rest).
    pub not_applicable: BTreeMap<String, String>,
    /// binaries with a non-zero exit status.
    pub failed_binaries: Vec<String>,
    /// test binary → seconds it ran.
    pub seconds: BTreeMap<String, u64>,
    pub causes: Vec<causes::Row>,
    /// `rsttrace check` as printed in the guest.
    pub check: String,
    pub passed: Option<bool>,
    /// Kernel modules modprobe could not load.
    pub modules_failed: Vec<String>,
}

impl Report {
    pub fn verdict(&self) -> Result<()> {
        let failed: Vec<&String> = self
            .tests
            .iter()
            .filter(|(_, r)| r.as_str() == "FAILED")
            .map(|(t, _)| t)
            .collect();
        match self.passed {
            None => bail!("the guest printed no {MARK} RESULT line (crash or panic? see above)"),
            Some(_) if self.tests.is_empty() => bail!("no test ran in the guest"),
            Some(true) if failed.is_empty() && self.failed_binaries.is_empty() => Ok(()),
            _ => bail!(
                "vm-test failed on {}: tests {:?}, binaries {:?}",
                self.kernel.as_deref().unwrap_or("?"),
                failed,
                self.failed_binaries
            ),
        }
    }

    pub fn parse(serial: &str) -> Report {
        let mut report = Report::default();
        let mut in_check = false;
        for line in serial.lines() {
            if let Some(rest) = line.find(MARK).map(|i| line[i + MARK.len()..].trim()) {
                let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                match word {
                    "BEGIN" => {
                        report.kernel = rest
                            .split_whitespace()
                            .find_map(|w| w.strip_prefix("kernel="))
                            .map(str::to_string);
                    }
                    "CHECK-BEGIN" => in_check = true,
                    "CHECK-END" => in_check = false,
                    "EXIT" => {
                        let mut w = rest.split_whitespace();
                        if let (Some(name), Some(rc)) = (w.next(), w.next()) {
                            if rc != "0" {
                                report.failed_binaries.push(name.to_string());
                            }
                            if let Some(secs) = w
                                .find_map(|f| f.strip_prefix("seconds="))
                                .and_then(|s| s.parse().ok())
                            {
                                report.seconds.insert(name.to_string(), secs);
                            }
                        }
                    }
                    "CAUSE" => report.causes.extend(causes::Row::parse(rest)),
                    "MODULE-FAILED" => report.modules_failed.push(rest.trim().to_string()),
                    "RESULT" => report.passed = Some(rest.trim() == "PASS"),
                    _ => {}
                }
            } else if in_check {
                report.check.push_str(line);
                report.check.push('\n');
            } else if let Some(rest) = line.strip_prefix("test ")
                && let Some((name, result)) = rest.rsplit_once(" ... ")
            {
                let result = result.split_whitespace().next().unwrap_or("");
                if ["ok", "FAILED", "ignored"].contains(&result) {
                    report.tests.insert(name.to_string(), result.to_string());
                }
            }
        }
        for r in report
            .causes
            .iter()
            .filter(|r| r.kind == causes::RowKind::NotApplicable)
        {
            // "name[family]" in the report; libtest names the test "name".
            let test = r.test.split('[').next().unwrap_or(&r.test);
            report
                .not_applicable
                .insert(test.to_string(), r.confidence.clone());
        }
        report
    }

    pub fn print(&self, package: &str) {
        let kernel = self.kernel.as_deref().unwrap_or(package);
        eprintln!();
        eprintln!("vm-test on {kernel} ({package}):");
        for (test, result) in &self.tests {
            match self.not_applicable.get(test) {
                Some(why) => eprintln!("  {:>7}  {test}: {why}", "n/a"),
                None => eprintln!("  {result:>7}  {test}"),
            }
        }
        let count = |r: &str| self.tests.values().filter(|v| v.as_str() == r).count();
        eprintln!(
            "  {} passed ({} of them not applicable on this kernel), {} failed, {} ignored",
            count("ok") - self.not_applicable.len().min(count("ok")),
            self.not_applicable.len(),
            count("FAILED"),
            count("ignored")
        );
        if !self.modules_failed.is_empty() {
            eprintln!(
                "  warning: kernel modules not loaded in the guest: {}",
                self.modules_failed.join(", ")
            );
        }
        causes::print_summary(kernel, &self.causes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_output_is_parsed_into_a_report() {
        let serial = "\
[    1.2] random kernel line
RSTTRACE-VM: MODULE-FAILED veth
RSTTRACE-VM: BEGIN kernel=6.1.0-56-cloud-amd64 cpus=2
RSTTRACE-VM: CHECK-BEGIN
hooks: fine
RSTTRACE-VM: CHECK-END rc=0 seconds=3
RSTTRACE-VM: RUN causes_loopback
running 2 tests
test so_linger_zero ... ok
test port_not_open_and_peer_refused ... FAILED
RSTTRACE-VM: EXIT causes_loopback 101 seconds=42
RSTTRACE-VM: CAUSE event\tso_linger_zero\tsent\tlinger_zero\tlikely
RSTTRACE-VM: CAUSE not_applicable\tso_linger_zero\t-\t-\tno such thing here
RSTTRACE-VM: RESULT FAIL
";
        let r = Report::parse(serial);
        assert_eq!(r.kernel.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(r.tests["so_linger_zero"], "ok");
        assert_eq!(r.not_applicable["so_linger_zero"], "no such thing here");
        assert_eq!(r.tests["port_not_open_and_peer_refused"], "FAILED");
        assert_eq!(r.failed_binaries, ["causes_loopback"]);
        assert_eq!(r.seconds["causes_loopback"], 42);
        assert_eq!(r.modules_failed, ["veth"]);
        assert_eq!(r.check, "hooks: fine\n");
        assert_eq!(r.causes.len(), 2);
        assert_eq!(r.passed, Some(false));
        assert!(r.verdict().is_err());

        let ok = serial
            .replace("... FAILED", "... ok")
            .replace("causes_loopback 101", "causes_loopback 0")
            .replace("RESULT FAIL", "RESULT PASS");
        assert!(Report::parse(&ok).verdict().is_ok());
        assert!(Report::parse("no markers at all").verdict().is_err());
    }
}

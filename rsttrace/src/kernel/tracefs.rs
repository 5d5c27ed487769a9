//! tracefs helpers: finding (or mounting) tracefs and reading the layout of
//! classic tracepoints from their `format` files, which differ between
//! kernels (e.g. `tcp_send_reset` gained `reason` and lost `sport` in 6.10).

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use rsttrace_ebpf::abi::{ABSENT, OwnerTracepoints, TracepointLayout};

const TRACING: &str = "/sys/kernel/tracing";
const DEBUG_TRACING: &str = "/sys/kernel/debug/tracing";

/// One `field:` line of a tracepoint `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpField {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// The tracefs root, mounting tracefs on /sys/kernel/tracing if no mount is
/// found (minimal containers and some distributions do not mount it).
pub fn ensure_mounted() -> Result<PathBuf> {
    for root in [TRACING, DEBUG_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    mount_tracefs()
}

fn mount_tracefs() -> Result<PathBuf> {
    const SOURCE: &CStr = c"nodev";
    const TARGET: &CStr = c"/sys/kernel/tracing";
    const FSTYPE: &CStr = c"tracefs";
    // SAFETY: all pointers are NUL-terminated static strings; no mount data.
    let rc = unsafe {
        libc::mount(
            SOURCE.as_ptr(),
            TARGET.as_ptr(),
            FSTYPE.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 && Path::new(TRACING).join("events").is_dir() {
        log::info!("mounted tracefs on {TRACING}");
        return Ok(PathBuf::from(TRACING));
    }
    if rc != 0 {
        log::debug!(
            "mount tracefs on {TRACING}: {}",
            std::io::Error::last_os_error()
        );
    }
    bail!("tracefs is not mounted; run `mount -t tracefs nodev /sys/kernel/tracing`")
}

/// Parses the `field:` lines of a tracepoint `format` file, e.g.
/// `\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;`.
pub fn parse_format(text: &str) -> Result<Vec<TpField>> {
    let mut fields = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with("field:") {
            continue;
        }
        fields.push(
            parse_field_line(line).with_context(|| format!("format line {}: {line:?}", n + 1))?,
        );
    }
    Ok(fields)
}

fn parse_field_line(line: &str) -> Result<TpField> {
    let (mut decl, mut offset, mut size) = (None, None, None);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once(':')
            .ok_or_else(|| anyhow!("no `key:` in {part:?}"))?;
        match key.trim() {
            "field" => decl = Some(value.trim()),
            "offset" => offset = Some(value.trim().parse::<u32>().context("bad offset")?),
            "size" => size = Some(value.trim().parse::<u32>().context("bad size")?),
            _ => {}
        }
    }
    let decl = decl.ok_or_else(|| anyhow!("no field declaration"))?;
    Ok(TpField {
        name: field_name(decl)
            .ok_or_else(|| anyhow!("no field name in {decl:?}"))?
            .to_owned(),
        offset: offset.ok_or_else(|| anyhow!("no offset"))?,
        size: size.ok_or_else(|| anyhow!("no size"))?,
    })
}

/// The declared name: the last identifier, before any `[N]`
/// (`__u8 saddr[28]`); `__data_loc char[] name` puts it after the brackets.
fn field_name(decl: &str) -> Option<&str> {
    let mut decl = decl.trim_end();
    while decl.ends_with(']') {
        decl = decl[..decl.rfind('[')?].trim_end();
    }
    let start = decl
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &decl[start..];
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
}

pub fn tracepoint_exists(root: &Path, category: &str, name: &str) -> bool {
    root.join("events")
        .join(category)
        .join(name)
        .join("format")
        .is_file()
}

pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Vec<TpField>> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_format(&text).with_context(|| format!("cannot parse {}", path.display()))
}

/// Field offsets of `tcp:tcp_send_reset` and `tcp:tcp_receive_reset` for the
/// classic tracepoint programs. `send_reason` is `ABSENT` before 6.10.
pub fn tcp_layout(root: &Path) -> Result<TracepointLayout> {
    let send = read_format(root, "tcp", "tcp_send_reset")?;
    let recv = read_format(root, "tcp", "tcp_receive_reset")?;
    let send_reason = match find(&send, "reason") {
        Some(f) => {
            ensure!(
                f.size == 4,
                "tcp_send_reset: reason has size {}, expected 4",
                f.size
            );
            f.offset
        }
        None => ABSENT,
    };
    Ok(TracepointLayout {
        send_skaddr: pointer(&send, "tcp_send_reset", "skaddr")?,
        send_skbaddr: pointer(&send, "tcp_send_reset", "skbaddr")?,
        send_reason,
        recv_skaddr: pointer(&recv, "tcp_receive_reset", "skaddr")?,
    })
}

/// `skb:kfree_skb`: offsets of `skbaddr` and of the 4-byte `reason`
/// (which the event has since 5.17).
pub fn kfree_skb_layout(root: &Path) -> Result<(u32, u32)> {
    let fields = read_format(root, "skb", "kfree_skb")?;
    let reason =
        find(&fields, "reason").ok_or_else(|| anyhow!("skb:kfree_skb has no reason field"))?;
    ensure!(
        reason.size == 4,
        "skb:kfree_skb: reason has size {}, expected 4",
        reason.size
    );
    Ok((pointer(&fields, "kfree_skb", "skbaddr")?, reason.offset))
}

/// Offsets for the classic owner-tracking program: `sock:inet_sock_set_state`
/// (`skaddr`, 4-byte `oldstate` and `newstate`, 2-byte `protocol`).
pub fn owner_layout(root: &Path) -> Result<OwnerTracepoints> {
    let set_state = read_format(root, "sock", "inet_sock_set_state")?;
    let sized = |name: &str, size: u32| -> Result<u32> {
        let f = find(&set_state, name)
            .ok_or_else(|| anyhow!("sock:inet_sock_set_state has no field {name}"))?;
        ensure!(
            f.size == size,
            "sock:inet_sock_set_state: {name} has size {}, expected {size}",
            f.size
        );
        Ok(f.offset)
    };
    Ok(OwnerTracepoints {
        set_state_skaddr: pointer(&set_state, "inet_sock_set_state", "skaddr")?,
        set_state_oldstate: sized("oldstate", 4)?,
        set_state_newstate: sized("newstate", 4)?,
        set_state_protocol: sized("protocol", 2)?,
    })
}

fn find<'a>(fields: &'a [TpField], name: &str) -> Option<&'a TpField> {
    fields.iter().find(|f| f.name == name)
}

/// Offset of a pointer field; the programs read it as 8 bytes.
fn pointer(fields: &[TpField], tp: &str, name: &str) -> Result<u32> {
    let f = find(fields, name).ok_or_else(|| anyhow!("tracepoint {tp} has no field {name}"))?;
    ensure!(
        f.size == 8,
        "tracepoint {tp}: {name} has size {}, expected 8",
        f.size
    );
    Ok(f.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_RESET_6_18: &str = "name: tcp_send_reset
ID: 2280
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;

print fmt: \"skbaddr=%p skaddr=%p src=%pISpc dest=%pISpc state=%s reason=%s\", REC->skbaddr, REC->skaddr, REC->saddr, REC->daddr, REC->state ? __print_symbolic(REC->state, { TCP_ESTABLISHED, \"TCP_ESTABLISHED\" }) : \"UNKNOWN\", __print_symbolic(REC->reason, { 0, \"NOT_SPECIFIED\" }, { 1, \"NO_SOCKET\" })
";

    const RECEIVE_RESET_6_18: &str = "name: tcp_receive_reset
ID: 2279
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:18;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:20;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:22;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:26;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:30;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;
\tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;

print fmt: \"family=%s sport=%hu dport=%hu saddr=%pI4 daddr=%pI4 saddrv6=%pI6c daddrv6=%pI6c sock_cookie=%llx\", __print_symbolic(REC->family, { 2, \"AF_INET\" }, { 10, \"AF_INET6\" }), REC->sport, REC->dport, REC->saddr, REC->daddr, REC->saddr_v6, REC->daddr_v6, REC->sock_cookie
";

    const SEND_RESET_6_1: &str = "name: tcp_send_reset
ID: 1500
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;

print fmt: \"skbaddr=%p skaddr=%p family=%s sport=%hu dport=%hu saddr=%pI4 daddr=%pI4 saddrv6=%pI6c daddrv6=%pI6c state=%s\", REC->skbaddr, REC->skaddr, __print_symbolic(REC->family, { 2, \"AF_INET\" }, { 10, \"AF_INET6\" }), REC->sport, REC->dport, REC->saddr, REC->daddr, REC->saddr_v6, REC->daddr_v6, REC->state ? __print_symbolic(REC->state, { TCP_ESTABLISHED, \"TCP_ESTABLISHED\" }) : \"UNKNOWN\"
";

    fn tp(name: &str, offset: u32, size: u32) -> TpField {
        TpField {
            name: name.into(),
            offset,
            size,
        }
    }

    #[test]
    fn parses_6_18_send_reset() {
        let fields = parse_format(SEND_RESET_6_18).unwrap();
        let expected = [
            tp("common_type", 0, 2),
            tp("common_flags", 2, 1),
            tp("common_preempt_count", 3, 1),
            tp("common_pid", 4, 4),
            tp("skbaddr", 8, 8),
            tp("skaddr", 16, 8),
            tp("state", 24, 4),
            tp("reason", 28, 4),
            tp("saddr", 32, 28),
            tp("daddr", 60, 28),
        ];
        assert_eq!(fields, expected);
    }

    #[test]
    fn parses_6_1_send_reset() {
        let fields = parse_format(SEND_RESET_6_1).unwrap();
        assert_eq!(fields.len(), 14);
        assert_eq!(find(&fields, "sport"), Some(&tp("sport", 28, 2)));
        assert_eq!(find(&fields, "saddr_v6"), Some(&tp("saddr_v6", 42, 16)));
        assert_eq!(find(&fields, "daddr_v6"), Some(&tp("daddr_v6", 58, 16)));
        assert_eq!(find(&fields, "reason"), None);
    }

    #[test]
    fn field_names() {
        assert_eq!(field_name("const void * skbaddr"), Some("skbaddr"));
        assert_eq!(field_name("__u8 saddr[28]"), Some("saddr"));
        assert_eq!(field_name("__data_loc char[] name"), Some("name"));
        assert_eq!(field_name("unsigned long ip[ 4 ] "), Some("ip"));
        assert_eq!(field_name("int"), Some("int"));
        assert_eq!(field_name("x[4"), None);
        assert_eq!(field_name("u8 grid[2][3]"), Some("grid"));
        assert_eq!(field_name("u8 a[1]["), None);
        assert_eq!(field_name("int 4"), None);
        assert_eq!(field_name(""), None);
    }

    #[test]
    fn rejects_malformed_field_lines() {
        for bad in [
            "field:int x;\toffset:zz;\tsize:4;",
            "field:int x;\tsize:4;",
            "field:int x;\toffset:4;",
            "field:;\toffset:0;\tsize:4;",
            "field:int x;\toffset:-1;\tsize:4;",
            "field:int x;\tgarbage;\toffset:1;\tsize:4;",
        ] {
            assert!(parse_format(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_format("name: x\nformat:\n\nprint fmt: \"\"").unwrap(),
            vec![]
        );
    }

    /// A throw-away tracefs-like tree under the temp directory.
    struct FakeTracefs(PathBuf);

    impl FakeTracefs {
        fn new(tag: &str, send: &str, recv: Option<&str>) -> Self {
            let root =
                std::env::temp_dir().join(format!("rsttrace-tracefs-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            for (name, text) in [("tcp_send_reset", Some(send)), ("tcp_receive_reset", recv)] {
                let Some(text) = text else { continue };
                let dir = root.join("events/tcp").join(name);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("format"), text).unwrap();
            }
            FakeTracefs(root)
        }
    }

    impl Drop for FakeTracefs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn tcp_layout_of_6_18_and_6_1() {
        let new = FakeTracefs::new("6.18", SEND_RESET_6_18, Some(RECEIVE_RESET_6_18));
        let layout = tcp_layout(&new.0).unwrap();
        let want = TracepointLayout {
            send_skaddr: 16,
            send_skbaddr: 8,
            send_reason: 28,
            recv_skaddr: 8,
        };
        assert_eq!(layout, want);
        assert!(tracepoint_exists(&new.0, "tcp", "tcp_send_reset"));
        assert!(!tracepoint_exists(&new.0, "tcp", "tcp_nope"));

        let old = FakeTracefs::new("6.1", SEND_RESET_6_1, Some(RECEIVE_RESET_6_18));
        let layout = tcp_layout(&old.0).unwrap();
        assert_eq!(
            layout,
            TracepointLayout {
                send_reason: ABSENT,
                ..want
            }
        );

        let partial = FakeTracefs::new("partial", SEND_RESET_6_1, None);
        let err = format!("{:#}", tcp_layout(&partial.0).unwrap_err());
        assert!(err.contains("tcp_receive_reset"), "{err}");
    }

    #[test]
    fn reads_running_kernel() {
        let root = Path::new(TRACING);
        if !tracepoint_exists(root, "tcp", "tcp_send_reset") {
            crate::test_support::skipped(
                "kernel::tracefs",
                &format!("tracefs not mounted at {TRACING}"),
            );
            return;
        }
        let layout = tcp_layout(root).unwrap();
        assert!(layout.send_skaddr != ABSENT && layout.recv_skaddr != ABSENT);
    }
}

//! Kernels without BTF of their own (CONFIG_DEBUG_INFO_BTF=n): rsttrace
//! takes a BTF file for the running kernel with `--btf`. The test hides
//! /sys/kernel/btf from rsttrace (an empty tmpfs over it, in a mount
//! namespace of rsttrace's own) and hands it a copy of the real file.

mod common;

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;

/// Makes the child's /sys/kernel/btf an empty directory, for it alone.
fn hide_sysfs_btf(cmd: &mut Command) {
    let none = CString::new("none").unwrap();
    let root = CString::new("/").unwrap();
    let target = CString::new("/sys/kernel/btf").unwrap();
    let tmpfs = CString::new("tmpfs").unwrap();
    let opts = CString::new("size=4k,mode=0755").unwrap();
    // SAFETY: only async-signal-safe syscalls on values prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            // Keep the tmpfs out of the test's own namespace.
            if libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return fail();
            }
            if libc::mount(
                none.as_ptr(),
                target.as_ptr(),
                tmpfs.as_ptr(),
                0,
                opts.as_ptr().cast(),
            ) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
}

fn check(args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rsttrace"));
    hide_sysfs_btf(&mut cmd);
    let out = cmd
        .arg("check")
        .args(args)
        .output()
        .expect("run rsttrace check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn btf_from_a_file_when_sysfs_has_none() {
    let Some(mut sc) = Scenario::new("btf_from_a_file_when_sysfs_has_none").start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let btf = dir.path().join("vmlinux.btf");
    std::fs::copy("/sys/kernel/btf/vmlinux", &btf).unwrap();
    std::fs::set_permissions(&btf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let btf_arg = btf.to_str().unwrap();

    // Without the file: no BTF, and check names the fix.
    let (ok, text) = check(&[]);
    assert!(!ok, "check without BTF should fail:\n{text}");
    assert!(text.contains("--btf FILE"), "{text}");

    // With it: a plan without tp_btf/fentry, which need the kernel's own BTF.
    let (ok, text) = check(&["--btf", btf_arg]);
    assert!(ok, "check --btf:\n{text}");
    assert!(text.contains("(--btf)"), "{text}");
    assert!(
        !text.contains("send=tp_btf") && !text.contains("send=fentry"),
        "{text}"
    );

    // Tracing reads socket fields at offsets found in the file: the unread
    // byte count of a close() with unread data proves them.
    let listener = TcpListener::bind(loopback(0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let closed_port = free_port();
    sc.trace_with(
        &[
            "--btf",
            btf_arg,
            "--port",
            &port.to_string(),
            "--port",
            &closed_port.to_string(),
        ],
        hide_sysfs_btf,
    );
    let plan = sc.plan().clone();
    assert!(
        plan["send_family"] != "tp_btf" && plan["send_family"] != "fentry",
        "{plan}"
    );
    let socketless = sc.sees_socketless_rsts();
    let _ = TcpStream::connect(loopback(closed_port));
    let mut client = TcpStream::connect(loopback(port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.write_all(&[7u8; 100]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(server); // close() with 100 bytes unread
    let mut buf = [0u8; 16];
    let read = client.read(&mut buf);
    assert!(read.is_err(), "client should see a reset, got {read:?}");
    let events = sc.stop();

    let refused = provoked(&events, "received", "peer_refused");
    assert_eq!(refused.len(), 1, "{plan}\n{}", describe(&events));
    let not_open = provoked(&events, "sent", "port_not_open");
    assert_eq!(
        not_open.len(),
        usize::from(socketless),
        "{plan}\n{}",
        describe(&events)
    );
    let unread = provoked(&events, "sent", "close_unread_data");
    assert_eq!(unread.len(), 1, "{plan}\n{}", describe(&events));
    assert_eq!(unread[0]["evidence"]["unread_bytes_lost"], 100);
    assert_eq!(unread[0]["pid"], std::process::id());
}

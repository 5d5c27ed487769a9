//! The guest's initramfs: busybox, the test binaries, rsttrace, the host
//! tools the tests drive and their libraries, the kernel modules the tests
//! need, /init (init.sh) and its per-run settings (/vm.conf).

use std::{
    ffi::OsString,
    fs,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::{MARK, kernel::Kernel};
use crate::system::{self, capture, say};

/// Host tools the integration tests may drive inside the guest.
const GUEST_TOOLS: [&str; 3] = ["ip", "nft", "ss"];
/// Kernel modules (with their dependencies) loaded before the tests: network
/// namespaces joined by veth, nftables rules that drop or reset.
/// tcp_diag: `ss -K` (sock_diag destroy) and `ss` itself.
const GUEST_MODULES: [&str; 5] = ["veth", "nf_tables", "nft_reject_inet", "nft_ct", "tcp_diag"];
/// Where the guest finds tests/stacks.rs's program (RSTTRACE_STACK_HELPER).
const STACK_HELPER: &str = "/tests/close_unread";
/// The guest's /init.
const INIT_SCRIPT: &str = include_str!("init.sh");

/// What runs inside.
pub struct Built {
    pub rsttrace: PathBuf,
    /// Integration test binaries (name, path).
    pub tests: Vec<(String, PathBuf)>,
}

/// What /init runs: the test binaries with these libtest arguments, and
/// `rsttrace check` with these.
pub struct Run<'a> {
    pub test_args: &'a [OsString],
    pub check_args: &'a [&'a str],
}

pub fn build(
    work_dir: &Path,
    stack_helper_source: &Path,
    built: &Built,
    kernel: &Kernel,
    run: &Run,
) -> Result<PathBuf> {
    let stage = work_dir.join("initramfs");
    let _ = fs::remove_dir_all(&stage);
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "tests",
    ] {
        fs::create_dir_all(stage.join(dir))?;
    }
    let busybox = system::which("busybox").context("busybox not found")?;
    install_binary(&stage, &busybox, Path::new("/bin/busybox"))?;
    symlink("busybox", stage.join("bin/sh"))?;

    // The test binaries find rsttrace at the absolute path cargo compiled in
    // (CARGO_BIN_EXE_rsttrace), so it goes to the same path in the guest.
    install_binary(&stage, &built.rsttrace, &built.rsttrace)?;
    let mut names = Vec::new();
    for (name, path) in &built.tests {
        install_binary(&stage, path, &Path::new("/tests").join(name))?;
        names.push(name.as_str());
    }
    for tool in GUEST_TOOLS {
        match system::which(tool) {
            Some(path) => install_binary(&stage, &path, &Path::new("/usr/sbin").join(tool))?,
            None => {
                say!("warning: {tool} not found on the host; tests needing it will fail in the VM");
            }
        }
    }
    build_stack_helper(stack_helper_source, &stage)?;
    install_modules(&stage, kernel)?;
    let init = stage.join("init");
    fs::write(&init, INIT_SCRIPT)?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    fs::write(
        stage.join("vm.conf"),
        settings(&built.rsttrace, &names, run),
    )?;

    let image = work_dir.join("initramfs.cpio.gz");
    let mut pack = Command::new("sh");
    pack.arg("-c")
        .arg("find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 > \"$1\"")
        .arg("sh")
        .arg(&image)
        .current_dir(&stage);
    system::run(&mut pack)?;
    let size = fs::metadata(&image)?.len();
    say!(
        "initramfs: {} ({:.1} MiB)",
        image.display(),
        size as f64 / (1 << 20) as f64
    );
    Ok(image)
}

/// Tests of userspace behaviour that need host tools the guest image does
/// not carry (tshark reads pcapng back, setpriv drops privileges); they say
/// nothing about the kernel and run in the host suite.
const HOST_ONLY_TESTS: [&str; 2] = [
    "pcapng_export_reads_back_in_tshark",
    "without_privileges_one_clear_message",
];

/// /vm.conf: shell assignments init.sh sources.
fn settings(rsttrace: &Path, tests: &[&str], run: &Run) -> String {
    let skips = HOST_ONLY_TESTS
        .iter()
        .flat_map(|t| [OsString::from("--skip"), OsString::from(*t)]);
    let args: Vec<String> = run
        .test_args
        .iter()
        .cloned()
        .chain(skips)
        .map(|a| quote(&a.to_string_lossy()))
        .collect();
    [
        ("MARK", quote(MARK)),
        ("RSTTRACE", quote(&rsttrace.display().to_string())),
        ("TESTS", quote(&tests.join(" "))),
        // Evaluated with `eval set --`: a list of quoted words.
        ("TEST_ARGS", quote(&args.join(" "))),
        // Plain words (xtask's own), split by the shell.
        ("CHECK_ARGS", quote(&run.check_args.join(" "))),
        ("MODULES", quote(&GUEST_MODULES.join(" "))),
        ("STACK_HELPER", quote(STACK_HELPER)),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={v}\n"))
    .collect()
}

/// One shell word, single-quoted.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The guest has no C compiler: tests/stacks.rs gets its program built
/// here, with its debug info (what the test checks), at STACK_HELPER.
fn build_stack_helper(src: &Path, stage: &Path) -> Result<()> {
    let exe = stage.join(STACK_HELPER.trim_start_matches('/'));
    let mut cc = Command::new("cc");
    cc.args(["-g", "-O0", "-fno-omit-frame-pointer", "-o"])
        .arg(&exe)
        .arg(src);
    system::run(&mut cc)
}

/// Copies `src` to `dst` inside `stage` (debug info stripped: the guest needs
/// none and it is most of the size), with the shared libraries it needs.
fn install_binary(stage: &Path, src: &Path, dst: &Path) -> Result<()> {
    let target = stage.join(dst.strip_prefix("/").unwrap_or(dst));
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    let stripped = system::which("strip").is_some()
        && Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&target)
            .arg(src)
            .status()
            .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(src, &target).with_context(|| format!("copying {}", src.display()))?;
    }
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))?;
    for lib in shared_libraries(src) {
        let lib_target = stage.join(lib.strip_prefix("/").unwrap_or(&lib));
        if lib_target.exists() {
            continue;
        }
        if let Some(parent) = lib_target.parent() {
            fs::create_dir_all(parent)?;
        }
        // Follow symlinks: the guest gets the library under the name ld.so asks for.
        fs::copy(&lib, &lib_target).with_context(|| format!("copying {}", lib.display()))?;
    }
    Ok(())
}

/// GUEST_MODULES and what they depend on, with the index files modprobe
/// reads, under /lib/modules/<release>. Compressed modules (trixie's
/// `.ko.xz`) are unpacked here: busybox modprobe loads plain `.ko` files.
fn install_modules(stage: &Path, kernel: &Kernel) -> Result<()> {
    let dest = stage.join("lib/modules").join(&kernel.release);
    fs::create_dir_all(&dest)?;
    let dep = fs::read_to_string(kernel.modules.join("modules.dep"))?;
    for module in module_closure(&dep, &GUEST_MODULES)? {
        let plain = uncompressed_name(&module);
        let target = dest.join(plain);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        let src = kernel.modules.join(&module);
        if plain == module {
            fs::copy(&src, &target).with_context(|| format!("copying module {module}"))?;
        } else {
            let out = fs::File::create(&target)?;
            let mut xz = Command::new("xz");
            xz.arg("-dc").arg(&src).stdout(out);
            system::run(&mut xz).with_context(|| format!("decompressing module {module}"))?;
        }
    }
    for index in [
        "modules.dep",
        "modules.alias",
        "modules.symbols",
        "modules.builtin",
    ] {
        let src = kernel.modules.join(index);
        if src.is_file() {
            let text = fs::read_to_string(&src)?;
            let text = if index == "modules.dep" {
                text.replace(".ko.xz", ".ko")
            } else {
                text
            };
            fs::write(dest.join(index), text)?;
        }
    }
    Ok(())
}

fn uncompressed_name(module: &str) -> &str {
    module.strip_suffix(".xz").unwrap_or(module)
}

/// The module files (paths relative to lib/modules/<release>) that `names`
/// need, from modules.dep ("kernel/x/a.ko: kernel/y/b.ko ...").
fn module_closure(modules_dep: &str, names: &[&str]) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for name in names {
        let line = modules_dep
            .lines()
            .find(|l| {
                l.split(':')
                    .next()
                    .and_then(|path| Path::new(path).file_name()?.to_str()?.split('.').next())
                    == Some(name)
            })
            .with_context(|| format!("kernel module {name} is not in modules.dep"))?;
        let (path, deps) = line.split_once(':').unwrap_or((line, ""));
        for file in std::iter::once(path).chain(deps.split_whitespace()) {
            if !files.iter().any(|f| f == file) {
                files.push(file.to_string());
            }
        }
    }
    Ok(files)
}

/// Absolute paths `ldd` lists (none for a static binary).
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let Some(out) = capture(Command::new("ldd").arg(binary)) else {
        return Vec::new();
    };
    out.lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
            let word = l.split("=>").last()?.split_whitespace().next()?;
            word.starts_with('/').then(|| PathBuf::from(word))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_closure_follows_modules_dep() {
        let dep = "\
kernel/net/netfilter/nf_tables.ko: kernel/net/netfilter/nfnetlink.ko kernel/lib/libcrc32c.ko
kernel/net/netfilter/nfnetlink.ko:
kernel/lib/libcrc32c.ko:
kernel/drivers/net/veth.ko.xz:
";
        assert_eq!(
            module_closure(dep, &["veth", "nf_tables"]).unwrap(),
            [
                "kernel/drivers/net/veth.ko.xz",
                "kernel/net/netfilter/nf_tables.ko",
                "kernel/net/netfilter/nfnetlink.ko",
                "kernel/lib/libcrc32c.ko"
            ]
        );
        assert!(module_closure(dep, &["nft_nope"]).is_err());
        assert_eq!(
            uncompressed_name("kernel/drivers/net/veth.ko.xz"),
            "kernel/drivers/net/veth.ko"
        );
    }

    #[test]
    fn settings_reach_the_shell_word_for_word() {
        let conf = settings(
            Path::new("/x/rsttrace"),
            &["causes", "faults"],
            &Run {
                test_args: &[OsString::from("it's a"), OsString::from("--exact")],
                check_args: &["--hooks", "kprobe"],
            },
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{conf}\neval \"set -- $TEST_ARGS\"; printf '<%s>' \"$@\" $TESTS $CHECK_ARGS \"$RSTTRACE\""
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "<it's a><--exact><--skip><pcapng_export_reads_back_in_tshark><--skip>\
             <without_privileges_one_clear_message><causes><faults><--hooks><kprobe></x/rsttrace>"
        );
    }
}

//! Two network namespaces joined by a veth pair, for RSTs that must cross a
//! real (virtual) link, and nftables rules that drop or reject on it. Test
//! traffic never leaves them; `Drop` deletes them even when a test fails.

use std::ffi::CString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Side A is the client (10.77.0.1), side B the server (10.77.0.2). Every
/// pair is its own two namespaces, so the addresses never collide.
pub struct NetnsPair {
    pub a: Netns,
    pub b: Netns,
}

pub struct Netns {
    pub name: String,
    pub addr: Ipv4Addr,
}

pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

impl NetnsPair {
    pub fn new() -> NetnsPair {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // The guard exists before the first namespace: a step that fails
        // below still deletes what the steps before it made.
        let pair = NetnsPair {
            a: Netns {
                name: format!("rstt{id}a"),
                addr: A_ADDR,
            },
            b: Netns {
                name: format!("rstt{id}b"),
                addr: B_ADDR,
            },
        };
        // Interface names are at most 15 bytes.
        let (veth_a, veth_b) = ("veth0", "veth1");
        ip(&["netns", "add", &pair.a.name]);
        ip(&["netns", "add", &pair.b.name]);
        ip(&[
            "link",
            "add",
            veth_a,
            "netns",
            &pair.a.name,
            "type",
            "veth",
            "peer",
            "name",
            veth_b,
            "netns",
            &pair.b.name,
        ]);
        for (ns, dev) in [(&pair.a, veth_a), (&pair.b, veth_b)] {
            ns.ip(&["addr", "add", &format!("{}/24", ns.addr), "dev", dev]);
            ns.ip(&["link", "set", dev, "up"]);
            ns.ip(&["link", "set", "lo", "up"]);
        }
        pair
    }

    /// Its namespaces, A then B.
    pub fn namespaces(&self) -> [&Netns; 2] {
        [&self.a, &self.b]
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        delete(&self.namespaces());
    }
}

impl Netns {
    /// `ip -n NAME ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Runs `nft -f -` with `rules` inside the namespace.
    pub fn nft(&self, rules: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "nft failed on:\n{rules}");
    }

    /// Sets a per-namespace sysctl (`net.ipv4.tcp_abort_on_overflow`): a
    /// thread inside the namespace writes /proc/sys, which resolves `net`
    /// entries in the writer's namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_string();
        self.run(move || {
            std::fs::write(&path, &value).unwrap_or_else(|e| panic!("write {path}: {e}"));
        });
    }

    /// The namespace's inode: what rsttrace reports as `netns`.
    pub fn inode(&self) -> u64 {
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .expect("netns file")
            .ino()
    }

    pub fn socket_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.addr, port))
    }

    /// Runs `f` on a new thread that has entered this namespace: sockets it
    /// creates live there. The thread ends with `f`.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = CString::new(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// A listener on every address of this namespace.
    pub fn listen(&self, port: u16) -> std::net::TcpListener {
        self.run(move || std::net::TcpListener::bind(("0.0.0.0", port)).unwrap())
    }

    /// A connection made from this namespace.
    pub fn connect(&self, target: SocketAddr) -> std::net::TcpStream {
        self.run(move || std::net::TcpStream::connect(target).unwrap())
    }

    /// Like `spawn`, waiting for the result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in netns panicked")
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &CString) {
    // SAFETY: plain syscalls on a path we own; the fd is closed after setns.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        assert!(
            fd >= 0,
            "open {path:?}: {}",
            std::io::Error::last_os_error()
        );
        let rc = libc::setns(fd, libc::CLONE_NEWNET);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(rc, 0, "setns {path:?}: {err}");
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client (10.78.1.1) and a server (10.78.2.1) in namespaces of their
/// own, joined through a third that routes between them: a middlebox
/// (firewall, NAT) on the path, with its own conntrack.
pub struct RoutedPath {
    pub a: Netns,
    pub router: Netns,
    pub b: Netns,
}

impl RoutedPath {
    pub fn new() -> RoutedPath {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}r{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = |side: &str, addr: Ipv4Addr| Netns {
            name: format!("rstt{id}{side}"),
            addr,
        };
        let path = RoutedPath {
            a: ns("a", Ipv4Addr::new(10, 78, 1, 1)),
            router: ns("r", Ipv4Addr::new(10, 78, 1, 2)),
            b: ns("b", Ipv4Addr::new(10, 78, 2, 1)),
        };
        for n in [&path.a, &path.router, &path.b] {
            ip(&["netns", "add", &n.name]);
            n.ip(&["link", "set", "lo", "up"]);
        }
        for (left, ldev, right, rdev) in [
            (&path.a, "veth0", &path.router, "veth1"),
            (&path.router, "veth2", &path.b, "veth3"),
        ] {
            ip(&[
                "link",
                "add",
                ldev,
                "netns",
                &left.name,
                "type",
                "veth",
                "peer",
                "name",
                rdev,
                "netns",
                &right.name,
            ]);
        }
        for (n, dev, cidr) in [
            (&path.a, "veth0", "10.78.1.1/24"),
            (&path.router, "veth1", "10.78.1.2/24"),
            (&path.router, "veth2", "10.78.2.2/24"),
            (&path.b, "veth3", "10.78.2.1/24"),
        ] {
            n.ip(&["addr", "add", cidr, "dev", dev]);
            n.ip(&["link", "set", dev, "up"]);
        }
        path.a.ip(&["route", "add", "default", "via", "10.78.1.2"]);
        path.b.ip(&["route", "add", "default", "via", "10.78.2.2"]);
        path.router.sysctl("net.ipv4.ip_forward", "1");
        path
    }

    /// Its namespaces, client to server.
    pub fn namespaces(&self) -> [&Netns; 3] {
        [&self.a, &self.router, &self.b]
    }
}

impl Drop for RoutedPath {
    fn drop(&mut self) {
        delete(&self.namespaces());
    }
}

/// Deletes `namespaces`, those that exist: a half-built set too. Deleting a
/// namespace deletes its end of every veth pair, and the peer with it.
fn delete(namespaces: &[&Netns]) {
    for ns in namespaces {
        let _ = Command::new("ip")
            .args(["netns", "del", &ns.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// An nftables table `rsttrace` with one input-hook chain holding `rules`.
pub fn input_rules(rules: &str) -> String {
    format!(
        "table inet rsttrace {{\n chain input {{\n type filter hook input priority 0;\n {rules}\n }}\n}}\n"
    )
}

/// Deletes the table `input_rules` made.
pub const DELETE_RULES: &str = "delete table inet rsttrace";

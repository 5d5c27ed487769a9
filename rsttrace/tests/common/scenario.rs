//! The prologue and epilogue every kernel test shares, said once: skip (or,
//! under RSTTRACE_REQUIRE_KERNEL_TESTS, fail) where kernel tests cannot
//! run; build the network namespaces, sysctls and nftables rules; start
//! rsttrace and wait for its `ready` line; stop it and read its events; and
//! tear everything down, on a panic too. A test body is then its traffic
//! and its assertions:
//!
//! ```ignore
//! let Some(mut sc) = Scenario::new("test_name")
//!     .netns_pair()
//!     .nft(Side::B, input_rules("tcp dport 80 drop;"))
//!     .trace(&["--port", "80"])
//!     .start()
//! else {
//!     return;
//! };
//! // ... traffic between sc.a() and sc.b() ...
//! let events = sc.stop();
//! ```

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::kernel_tests_possible;
use super::netns::{Netns, NetnsPair, RoutedPath};
use super::tracer::{Attached, Tracer};

/// A namespace of the scenario's network: A the client, B the server,
/// Router between them on a routed path.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    A,
    B,
    Router,
}

/// What `Scenario::new` builds before the test's traffic.
pub struct Builder {
    test: String,
    network: Network,
    steps: Vec<Step>,
    trace: Option<(Vec<String>, CommandSetup)>,
}

type CommandSetup = Box<dyn FnOnce(&mut Command)>;

enum Network {
    /// The host's own namespace: loopback.
    Host,
    Pair,
    Routed,
}

/// Set up in order, after the namespaces and before the tracer.
enum Step {
    Sysctl(Side, String, String),
    Nft(Side, String),
}

/// A running scenario. Dropping it kills its tracer, then deletes its
/// namespaces (which takes their veth pairs and nftables rules along).
pub struct Scenario {
    // Fields drop in declaration order: the tracer ends first.
    tracer: Option<Tracer>,
    net: Net,
}

enum Net {
    Host,
    Pair(NetnsPair),
    Routed(RoutedPath),
}

impl Scenario {
    /// A scenario for the kernel test `test` (its name, for the skip report).
    #[expect(
        clippy::new_ret_no_self,
        reason = "a scenario is described first, then made: Scenario::new(..)...start()"
    )]
    pub fn new(test: &str) -> Builder {
        Builder {
            test: test.to_string(),
            network: Network::Host,
            steps: Vec::new(),
            trace: None,
        }
    }
}

impl Builder {
    /// Two namespaces joined by a veth pair (`NetnsPair`).
    pub fn netns_pair(mut self) -> Builder {
        self.network = Network::Pair;
        self
    }

    /// A client and a server namespace with a router between (`RoutedPath`).
    pub fn routed_path(mut self) -> Builder {
        self.network = Network::Routed;
        self
    }

    /// A per-namespace sysctl (`net.ipv4.tcp_timestamps`), set before tracing.
    pub fn sysctl(mut self, side: Side, key: &str, value: &str) -> Builder {
        self.steps
            .push(Step::Sysctl(side, key.to_string(), value.to_string()));
        self
    }

    /// nftables rules (`nft -f` text) loaded in a namespace before tracing.
    pub fn nft(mut self, side: Side, rules: impl Into<String>) -> Builder {
        self.steps.push(Step::Nft(side, rules.into()));
        self
    }

    /// Traces with `args` (`Tracer::start`) once the network is set up.
    pub fn trace(self, args: &[&str]) -> Builder {
        self.trace_with(args, |_| {})
    }

    /// `trace`, with `setup` applied to rsttrace's command first.
    pub fn trace_with(
        mut self,
        args: &[&str],
        setup: impl FnOnce(&mut Command) + 'static,
    ) -> Builder {
        let args = args.iter().map(|a| a.to_string()).collect();
        self.trace = Some((args, Box::new(setup)));
        self
    }

    /// Builds the scenario; None (the test reported as skipped) where
    /// kernel tests cannot run, a panic there under
    /// RSTTRACE_REQUIRE_KERNEL_TESTS. A step that fails panics after
    /// undoing the steps before it.
    pub fn start(self) -> Option<Scenario> {
        if !kernel_tests_possible(&self.test) {
            return None;
        }
        let mut scenario = Scenario {
            tracer: None,
            net: match self.network {
                Network::Host => Net::Host,
                Network::Pair => Net::Pair(NetnsPair::new()),
                Network::Routed => Net::Routed(RoutedPath::new()),
            },
        };
        for step in self.steps {
            match step {
                Step::Sysctl(side, key, value) => scenario.ns(side).sysctl(&key, &value),
                Step::Nft(side, rules) => scenario.ns(side).nft(&rules),
            }
        }
        if let Some((args, setup)) = self.trace {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            scenario.tracer = Some(Tracer::start_with(&args, setup));
        }
        Some(scenario)
    }
}

impl Scenario {
    /// A namespace of the scenario; panics on loopback, or for a side its
    /// network does not have.
    pub fn ns(&self, side: Side) -> &Netns {
        match (&self.net, side) {
            (Net::Pair(p), Side::A) => &p.a,
            (Net::Pair(p), Side::B) => &p.b,
            (Net::Routed(r), Side::A) => &r.a,
            (Net::Routed(r), Side::B) => &r.b,
            (Net::Routed(r), Side::Router) => &r.router,
            (Net::Pair(_), Side::Router) => panic!("a netns pair has no router"),
            (Net::Host, _) => panic!("a loopback scenario has no namespaces"),
        }
    }

    /// The client's namespace.
    pub fn a(&self) -> &Netns {
        self.ns(Side::A)
    }

    /// The server's namespace.
    pub fn b(&self) -> &Netns {
        self.ns(Side::B)
    }

    /// The router's namespace (a routed path).
    pub fn router(&self) -> &Netns {
        self.ns(Side::Router)
    }

    /// The namespaces it made (none on loopback).
    pub fn namespaces(&self) -> Vec<&Netns> {
        match &self.net {
            Net::Host => Vec::new(),
            Net::Pair(p) => p.namespaces().to_vec(),
            Net::Routed(r) => r.namespaces().to_vec(),
        }
    }

    /// Starts tracing with `args` now, for tests whose set-up must come
    /// between the network and the tracer (a listener seen from /proc), or
    /// that trace again after a `stop`.
    pub fn trace(&mut self, args: &[&str]) -> &Tracer {
        self.trace_with(args, |_| {})
    }

    /// `trace`, with `setup` applied to rsttrace's command first.
    pub fn trace_with(&mut self, args: &[&str], setup: impl FnOnce(&mut Command)) -> &Tracer {
        assert!(self.tracer.is_none(), "a tracer already runs");
        self.tracer.insert(Tracer::start_with(args, setup))
    }

    /// The running tracer.
    pub fn tracer(&self) -> &Tracer {
        self.tracer.as_ref().expect("no tracer runs: trace() first")
    }

    /// The hook plan of the running tracer's `ready` line.
    pub fn plan(&self) -> &Value {
        self.tracer().plan()
    }

    /// The running tracer's send hook family (`Tracer::send_family`).
    pub fn send_family(&self) -> &str {
        self.tracer().send_family()
    }

    /// The running tracer's transport, "ring" or "perf".
    pub fn transport(&self) -> &str {
        self.tracer().transport()
    }

    /// `Tracer::proven_confidence`.
    pub fn proven_confidence(&self, cause: &str) -> &'static str {
        self.tracer().proven_confidence(cause)
    }

    /// `Tracer::sees_socketless_rsts`.
    pub fn sees_socketless_rsts(&self) -> bool {
        self.tracer().sees_socketless_rsts()
    }

    /// `Tracer::sees_aborts`.
    pub fn sees_aborts(&self) -> bool {
        self.tracer().sees_aborts()
    }

    /// The events exported so far.
    pub fn events(&self) -> Vec<Value> {
        self.tracer().events()
    }

    /// Waits until the events exported so far satisfy `done`; false on timeout.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> bool {
        self.tracer().wait_for(timeout, done)
    }

    /// Stops the tracer (SIGINT) and returns its events. The namespaces
    /// stay until the scenario is dropped.
    pub fn stop(&mut self) -> Vec<Value> {
        self.take_tracer().stop()
    }

    /// `stop`, also returning the export file's bytes.
    pub fn stop_with_raw(&mut self) -> (Vec<Value>, Vec<u8>) {
        self.take_tracer().stop_with_raw()
    }

    /// `stop`, also returning the export's bytes and rsttrace's stderr.
    pub fn stop_with_stderr(&mut self) -> (Vec<Value>, Vec<u8>, String) {
        self.take_tracer().stop_with_stderr()
    }

    fn take_tracer(&mut self) -> Tracer {
        self.tracer.take().expect("no tracer runs: trace() first")
    }

    /// Starts an rsttrace of the test's own making (`Attached`), for tests
    /// of outputs and endings the scenario's tracer does not have.
    pub fn attach(&self, cmd: &mut Command) -> Attached {
        Attached::new(cmd)
    }
}

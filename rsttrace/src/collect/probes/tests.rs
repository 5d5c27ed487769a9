use super::*;

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// This machine: tracepoints and tp_btf, no kprobes, fentry refused.
pub(crate) fn linux_6_18() -> KernelFacts {
    KernelFacts {
        btf: true,
        kernel_btf: true,
        btf_tracepoint_args: [
            ("tcp_send_reset", 4),
            ("tcp_receive_reset", 2),
            ("inet_sk_error_report", 2),
            ("net_dev_queue", 2),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect(),
        btf_function_args: [
            ("tcp_v4_send_reset", 3),
            ("tcp_v6_send_reset", 3),
            ("tcp_send_active_reset", 3),
            ("tcp_reset", 2),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect(),
        tracepoints: set(&[
            "tcp:tcp_send_reset",
            "tcp:tcp_receive_reset",
            "skb:kfree_skb",
        ]),
        tp_send_reset_reason: true,
        tp_send_reset_no_socket: true,
        kprobe_pmu: false,
        functions: BTreeMap::new(),
        fentry: Some(Err("Operation not permitted".into())),
        kfree_skb_no_socket: true,
        preempt_count: Err("CONFIG_KALLSYMS_ALL is off".into()),
    }
}

/// Debian bookworm's 6.1: no reason anywhere, kprobes and fentry work.
pub(crate) fn linux_6_1() -> KernelFacts {
    let mut k = linux_6_18();
    k.btf_tracepoint_args.insert("tcp_send_reset".into(), 3);
    for f in ["tcp_v4_send_reset", "tcp_v6_send_reset"] {
        k.btf_function_args.insert(f.into(), 2);
    }
    k.btf_function_args
        .insert("tcp_send_active_reset".into(), 2);
    k.tp_send_reset_reason = false;
    k.tp_send_reset_no_socket = false;
    k.kprobe_pmu = true;
    k.functions = wanted_functions()
        .into_iter()
        .map(|f| (f.to_string(), f.to_string()))
        .collect();
    k.fentry = Some(Ok(()));
    k
}

#[test]
fn kfree_skb_fills_the_no_socket_gap_of_6_1_tracepoints() {
    let k = linux_6_1();
    let p = choose(HookMode::Tracepoint, &k).unwrap();
    assert_eq!(
        p.no_socket_hook.map(|h| h.name),
        Some("tracepoint:skb:kfree_skb(NO_SOCKET)")
    );
    assert!(p.no_socket);
    assert!(p.to_string().contains("extra=tracepoint:skb:kfree_skb"));
    // Not added where the send hook already sees those RSTs...
    assert_eq!(choose(HookMode::Auto, &k).unwrap().no_socket_hook, None);
    // ...nor to a forced family it does not belong to.
    let p = choose(HookMode::TpBtf, &k).unwrap();
    assert!(p.no_socket_hook.is_none() && !p.no_socket);
}

#[test]
fn prefers_tp_btf_with_reason_on_6_18() {
    let p = choose(HookMode::Auto, &linux_6_18()).unwrap();
    assert_eq!(p.send.name, "tp_btf:tcp_send_reset(sk,skb,reason)");
    assert_eq!(p.receive.name, "tp_btf:tcp_receive_reset");
    assert!(p.reason && p.no_socket && !p.packet);
    assert_eq!(p.context, ContextSource::SocketLock);
}

#[test]
fn prefers_function_hooks_on_6_1_because_they_see_socketless_rsts() {
    let p = choose(HookMode::Auto, &linux_6_1()).unwrap();
    assert_eq!(p.send.family, Family::Fentry);
    assert_eq!(p.receive.family, Family::Fentry);
    assert!(p.no_socket && p.packet && !p.reason);

    let mut no_fentry = linux_6_1();
    no_fentry.fentry = Some(Err("EPERM".into()));
    let p = choose(HookMode::Auto, &no_fentry).unwrap();
    assert_eq!(p.send.family, Family::Kprobe);
    assert_eq!(p.receive.family, Family::Kprobe);
}

#[test]
fn uses_the_two_argument_prototype_on_6_1_when_forced() {
    let p = choose(HookMode::TpBtf, &linux_6_1()).unwrap();
    assert_eq!(p.send.name, "tp_btf:tcp_send_reset(sk,skb)");
    assert!(!p.reason && !p.no_socket);
}

#[test]
fn falls_back_to_tracepoints_without_btf() {
    let k = KernelFacts {
        btf: false,
        ..linux_6_18()
    };
    let p = choose(HookMode::Auto, &k).unwrap();
    assert_eq!(p.send.family, Family::Tracepoint);
    assert_eq!(p.receive.family, Family::Tracepoint);
    assert!(p.reason, "6.18's tracepoint has a reason field");
    assert!(choose(HookMode::TpBtf, &k).is_err());
}

#[test]
fn forced_modes() {
    let p = choose(HookMode::Tracepoint, &linux_6_1()).unwrap();
    assert_eq!(p.send.family, Family::Tracepoint);
    assert!(!p.reason && p.no_socket && p.no_socket_hook.is_some());
    let p = choose(HookMode::Kprobe, &linux_6_1()).unwrap();
    assert_eq!(p.send.family, Family::Kprobe);
    let err = choose(HookMode::Kprobe, &linux_6_18())
        .unwrap_err()
        .to_string();
    assert!(err.contains("kprobe PMU"), "{err}");
    let err = choose(HookMode::Fentry, &linux_6_18())
        .unwrap_err()
        .to_string();
    assert!(err.contains("fentry: "), "{err}");
}

#[test]
fn an_inlined_function_disables_its_hooks() {
    let mut k = linux_6_1();
    k.functions.remove("tcp_reset");
    k.btf_function_args.remove("tcp_reset");
    let p = choose(HookMode::Auto, &k).unwrap();
    assert_eq!(p.receive.family, Family::TpBtf);
    assert_eq!(p.send.family, Family::Fentry);
}

#[test]
fn nothing_usable_is_an_error_naming_what_is_missing() {
    let err = choose(HookMode::Auto, &KernelFacts::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tcp:tcp_send_reset"), "{err}");
    assert!(err.contains("kprobe PMU"), "{err}");
}

#[test]
fn firewall_rejects_are_hooked_in_netfilter_where_kprobes_work() {
    let mut k = linux_6_1();
    k.functions.retain(|f, _| !f.starts_with("nf_"));
    // The reject modules not loaded yet: attached when they load.
    assert!(matches!(
        choose_firewall(false, &k),
        Firewall::Kernel { loaded: false, .. }
    ));
    k.functions
        .insert("nf_send_reset".into(), "nf_send_reset".into());
    assert!(matches!(
        choose_firewall(true, &k),
        Firewall::Kernel { loaded: true, .. }
    ));
    assert!(wanted_functions().contains("nf_send_reset6"));
}

#[test]
fn firewall_rejects_cost_every_packet_without_kprobes_so_opt_in() {
    let k = linux_6_18();
    assert_eq!(choose_firewall(false, &k), Firewall::OptIn);
    let Firewall::Device { hook } = choose_firewall(true, &k) else {
        panic!("--firewall on 6.18")
    };
    assert_eq!(hook.attach.len(), 1);
    let plan = choose(HookMode::Auto, &k).unwrap();
    assert!(
        plan.to_string().ends_with(" firewall=off(--firewall)"),
        "{plan}"
    );
    let mut k = k;
    k.btf_tracepoint_args.remove("net_dev_queue");
    assert!(matches!(choose_firewall(true, &k), Firewall::Off(_)));
}

#[test]
fn wanted_functions_come_from_the_table() {
    let f = wanted_functions();
    assert!(f.contains("tcp_v4_send_reset") && f.contains("tcp_reset"));
}

#[test]
fn the_abort_hook_is_the_tracepoint_where_the_kernel_has_it_whatever_hooks_says() {
    // This machine (6.18): tp_btf, and no kprobes to fall back on.
    for mode in [HookMode::Auto, HookMode::TpBtf, HookMode::Tracepoint] {
        let p = choose(mode, &linux_6_18()).unwrap();
        assert_eq!(
            p.aborts.map(|h| (h.name, h.family)),
            Some(("tp_btf:inet_sk_error_report", Family::TpBtf)),
            "{mode:?}"
        );
        assert!(
            p.to_string()
                .contains(" aborts=tp_btf:inet_sk_error_report")
        );
    }
    // 5.10: no inet_sk_error_report (5.14+): the kprobe on the function
    // the tracepoint reports, whatever family the RST hooks are.
    let mut k = linux_6_1();
    k.btf_tracepoint_args.remove("inet_sk_error_report");
    for mode in [HookMode::Auto, HookMode::Tracepoint, HookMode::Kprobe] {
        let p = choose(mode, &k).unwrap();
        assert_eq!(
            p.aborts.map(|h| (h.name, h.family)),
            Some(("kprobe:sock_def_error_report", Family::Kprobe)),
            "{mode:?}"
        );
    }
    // Neither: the plan says so, and why.
    k.kprobe_pmu = false;
    let p = choose(HookMode::Tracepoint, &k).unwrap();
    assert_eq!(p.aborts, None);
    assert!(p.to_string().contains(" aborts=no"), "{p}");
    let why = why_no_abort_hook(&k);
    assert!(
        why.contains("no BTF type btf_trace_inet_sk_error_report"),
        "{why}"
    );
    assert!(why.contains("no kprobe PMU"), "{why}");
}

#[test]
fn abort_hooks_stay_out_of_the_rst_hooks_choice() {
    // No RST hook at all: the error lists the RST hooks, not the abort ones.
    let mut k = KernelFacts {
        kprobe_pmu: true,
        ..KernelFacts::default()
    };
    k.functions.insert(
        "sock_def_error_report".into(),
        "sock_def_error_report".into(),
    );
    assert!(!abort_hooks(&k).is_empty());
    let err = choose(HookMode::Auto, &k).unwrap_err().to_string();
    assert!(err.contains("tcp_reset"), "{err}");
    assert!(!err.contains("error_report"), "{err}");
}

#[test]
fn the_abort_kprobe_function_is_looked_up_in_kallsyms() {
    assert!(wanted_functions().contains("sock_def_error_report"));
}

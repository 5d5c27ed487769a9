#!/bin/sh
# /init of the vm-test guest (included in xtask at build time). What varies
# per run (test binaries, arguments, modules) is in /vm.conf, which xtask
# writes next to this script. Every line meant for xtask starts with $MARK.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
. /vm.conf
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# /tmp and /run stay on the (writable, RAM-backed) initramfs root: a tmpfs
# mounted there would hide binaries copied under the host's path when the
# checkout itself lives under /tmp.
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
# cgroup v2, as a systemd host has it (--cgroup/--container/--pod tests).
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
for m in $MODULES; do modprobe "$m" || echo "$MARK MODULE-FAILED $m"; done
# Smoke-test what namespace/nftables tests rely on.
ip link add rsttrace-vm0 type veth peer name rsttrace-vm1 && ip link del rsttrace-vm0 \
    || echo "$MARK MODULE-FAILED veth-smoke"
nft add table inet rsttrace_vm && nft delete table inet rsttrace_vm \
    || echo "$MARK MODULE-FAILED nft-smoke"
echo "$MARK BEGIN kernel=$(uname -r) cpus=$(nproc)"
status=0
# What rsttrace makes of this kernel, for the record (and a first smoke test).
echo "$MARK CHECK-BEGIN"
start=$(date +%s)
"$RSTTRACE" check $CHECK_ARGS 2>&1
echo "$MARK CHECK-END rc=$? seconds=$(( $(date +%s) - start ))"
eval "set -- $TEST_ARGS"
for t in $TESTS; do
    echo "$MARK RUN $t"
    start=$(date +%s)
    RSTTRACE_REQUIRE_KERNEL_TESTS=1 RSTTRACE_CAUSE_REPORT=/tmp/causes.tsv RUST_BACKTRACE=0 \
        RSTTRACE_TEST_START_SECS=120 RSTTRACE_STACK_HELPER="$STACK_HELPER" \
        "/tests/$t" "$@" 2>&1
    rc=$?
    echo "$MARK EXIT $t $rc seconds=$(( $(date +%s) - start ))"
    [ $rc -eq 0 ] || status=1
done
if [ -f /tmp/causes.tsv ]; then
    while IFS= read -r line; do echo "$MARK CAUSE $line"; done < /tmp/causes.tsv
fi
if [ $status -eq 0 ]; then echo "$MARK RESULT PASS"; else echo "$MARK RESULT FAIL"; fi
poweroff -f

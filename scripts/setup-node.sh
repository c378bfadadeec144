#!/usr/bin/env bash
# Prepares a Debian 12 machine (run as root) for syscribe's demo and its tests: the Debian packages,
# the kernel interfaces that eBPF and the runtimes need, and nothing else. Safe to run again.
set -euo pipefail

packages=(
  # recorder: libbpf loads the precompiled object; clang/llvm rebuild it (make bpf, and a test checks
  # the committed object is what the source builds to); bcc is the fallback backend.
  libbpf1 libbpf-dev clang llvm python3-bpfcc linux-headers-amd64
  # enforcement and names: libseccomp
  libseccomp2
  # runtimes and the busybox rootfs the demo and tests run containers from
  runc crun podman busybox-static
  # audit sources the enricher reads, and ausearch for the benchmark
  auditd rsyslog
  # the venv (system site packages, so that bcc is importable)
  python3 python3-venv python3-pip
  make git procps iproute2 kmod
  # the tests' Kubernetes API server: its certificates (tests/support/kubeapi.py)
  openssl
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tracefs for tracepoints (bcc also looks in debugfs).
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug || true

# bcc compiles against the headers under /lib/modules/$(uname -r)/build. Debian ships only its own
# kernel's headers; on another kernel, point at the newest installed ones (the bcc backend reads no
# kernel struct, so mismatched offsets cannot skew what it records).
kdir="/lib/modules/$(uname -r)"
if [ ! -e "$kdir/build" ] || [ ! -e "$kdir/source/include/linux/kconfig.h" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-arm64 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$hdr" ]; then
    mkdir -p "$kdir"
    ln -sfn "$hdr" "$kdir/build"
    ln -sfn "${hdr%-*}-common" "$kdir/source"  # Debian: arch headers in build, common ones in source
  fi
fi

# crun needs every controller on cgroup v1 when the machine runs hybrid cgroups with some
# controllers on the v2 hierarchy.
if [ -f /sys/fs/cgroup/unified/cgroup.controllers ]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    [ -d "/sys/fs/cgroup/$c" ] && mountpoint -q "/sys/fs/cgroup/$c" && continue
    mkdir -p "/sys/fs/cgroup/$c"
    mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" 2>/dev/null || echo "setup: could not mount cgroup v1 controller $c (crun may refuse to start)"
  done
fi
echo "setup: node ready"

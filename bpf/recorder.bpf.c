// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * syscribe's syscall recorder: counts, per syscall number, the syscalls of the tasks in one mount
 * namespace. Compiled once into a CO-RE object (scripts/build-bpf.sh) and loaded by
 * src/syscribe/recorder/coreobject.py through libbpf, so a node needs neither clang nor kernel headers.
 * Optionally (the container hook, docs/hook.md) the calls before a first "anchor" syscall are counted
 * apart, so that a runtime's setup before it loads the seccomp filter stays out of the profile.
 *
 * The layout of `counters` and `extra_key` is mirrored in coreobject.py; coreobject.py checks the map sizes at
 * load time, so a change here that is not made there fails loudly instead of misreading counts.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* Only the fields we read, relocated by libbpf against the running kernel's BTF. Declaring them
 * here instead of including a generated vmlinux.h keeps the build independent of the build host's
 * kernel. */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct mnt_namespace {
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct nsproxy {
	struct mnt_namespace *mnt_ns;
} __attribute__((preserve_access_index));

struct thread_info {
	__u32 status;
} __attribute__((preserve_access_index));

struct task_struct {
	struct thread_info thread_info;
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

#define NR_SLOTS 1024

/* Which syscall table a call used. Numbers of different tables must never share a counter. */
enum kind {
	KIND_NATIVE = 0,
	KIND_I386 = 1, /* int $0x80 / sysenter / 32-bit syscall on x86_64 */
	KIND_X32 = 2,  /* x86_64 table with the x32 bit set */
	NR_KINDS = 3,
};

enum compat_mode {
	COMPAT_NONE = 0,
	COMPAT_X86 = 1,
};

#define X86_TS_COMPAT 0x0002
#define X32_SYSCALL_BIT 0x40000000UL

/* The anchor (the container hook's "where runtime init ends", docs/hook.md): with ANCHOR_SYSCALL, the
 * calls made before the first native call numbered anchor_nr are counted apart, in `before`, so that
 * the runtime's own setup before it loads the seccomp filter stays out of the profile. */
enum anchor_mode {
	ANCHOR_NONE = 0,
	ANCHOR_SYSCALL = 1,
};

/* Set by userspace before load (the whole of .rodata, so one struct fixes its layout); the verifier
 * sees it as constant, so the filter costs one compare against an immediate. */
struct config {
	__u32 target_mnt_ns;
	__u32 compat_mode;
	__u32 anchor_mode;
	__u32 anchor_nr;
};

const volatile struct config cfg = {
	.target_mnt_ns = 0,
	.compat_mode = COMPAT_NONE,
	.anchor_mode = ANCHOR_NONE,
	.anchor_nr = 0,
};

/* Set once by the program when the anchor is seen; shared by every CPU (a plain global, not per-CPU),
 * so a call on any CPU after the anchor counts as after it. Userspace reads it to tell whether the
 * anchor was ever seen. */
volatile __u32 anchored = 0;

/* One element holding every counter: userspace reads all of them with a single lookup, and the
 * per-CPU copies need no atomics on the hot path. */
struct counters {
	__u64 calls[NR_KINDS][NR_SLOTS];
	__u64 lost; /* calls that could not be counted (overflow map full) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} counts SEC(".maps");

/* The calls before the anchor, same layout (a second map: one per-CPU value may not exceed 32 KiB). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} before SEC(".maps");

/* Numbers beyond NR_SLOTS (a future kernel, or a bogus number a program passes) are kept here so
 * that nothing is dropped silently. */
struct extra_key {
	__u64 nr;
	__u32 kind;
	__u32 phase; /* PHASE_COUNTED, or PHASE_BEFORE for a call before the anchor */
};

enum phase {
	PHASE_COUNTED = 0,
	PHASE_BEFORE = 1,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct extra_key);
	__type(value, __u64);
} extra SEC(".maps");

static __always_inline void count_extra(struct counters *c, __u32 kind, __u64 nr, __u32 phase)
{
	struct extra_key key = { .nr = nr, .kind = kind, .phase = phase };
	__u64 one = 1;
	__u64 *v = bpf_map_lookup_elem(&extra, &key);

	if (v) {
		*v += 1;
		return;
	}
	if (bpf_map_update_elem(&extra, &key, &one, BPF_NOEXIST) == 0)
		return;
	/* Another CPU may have created the key between our lookup and update. */
	v = bpf_map_lookup_elem(&extra, &key);
	if (v)
		*v += 1;
	else
		c->lost += 1;
}

static __always_inline void count(long id, __u32 ts_status)
{
	/* The kernel passes the number as a sign-extended int: -1 (or any negative number a program
	 * passes) is not an x32 call, whatever its bits. */
	__u64 nr = (__u64)id;
	__u32 kind = KIND_NATIVE;

	if (cfg.compat_mode == COMPAT_X86) {
		if (ts_status & X86_TS_COMPAT) {
			kind = KIND_I386;
		} else if (id >= 0 && (nr & X32_SYSCALL_BIT)) {
			kind = KIND_X32;
			nr &= ~X32_SYSCALL_BIT;
		}
	}

	__u32 zero = 0;
	__u32 phase = PHASE_COUNTED;
	struct counters *c;

	if (cfg.anchor_mode == ANCHOR_SYSCALL && !anchored) {
		if (kind == KIND_NATIVE && id == (long)cfg.anchor_nr)
			anchored = 1;
		else
			phase = PHASE_BEFORE;
	}
	/* Two lookups rather than one through a chosen map pointer, which the verifier handles less well. */
	if (phase == PHASE_BEFORE)
		c = bpf_map_lookup_elem(&before, &zero);
	else
		c = bpf_map_lookup_elem(&counts, &zero);
	if (!c)
		return;
	if (nr < NR_SLOTS)
		c->calls[kind][nr] += 1;
	else
		count_extra(c, kind, nr, phase);
}

/*
 * Both programs attach to the raw_syscalls:sys_enter tracepoint (args: struct pt_regs *, long id),
 * as a raw tracepoint: the classic attachment builds a perf record of the six arguments for every
 * syscall on the machine before the program can discard it, which measurably costs every process
 * on the node (docs/recording.md). Userspace loads one of them.
 */

/* Kernels >= 5.11: a BTF task pointer, read with plain (fault-safe) loads, no helper calls. */
SEC("raw_tracepoint/sys_enter")
int count_syscall(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 status = 0;

	if (task->nsproxy->mnt_ns->ns.inum != cfg.target_mnt_ns)
		return 0;
	if (cfg.compat_mode == COMPAT_X86 && bpf_core_field_exists(task->thread_info.status))
		status = task->thread_info.status;
	count((long)ctx->args[1], status);
	return 0;
}

/* Older kernels with BTF: the same reads through bpf_probe_read_kernel. */
SEC("raw_tracepoint/sys_enter")
int count_syscall_probe_read(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 status = 0;

	if (BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum) != cfg.target_mnt_ns)
		return 0;
	if (cfg.compat_mode == COMPAT_X86 && bpf_core_field_exists(task->thread_info.status))
		status = BPF_CORE_READ(task, thread_info.status);
	count((long)ctx->args[1], status);
	return 0;
}

/* GPL-compatible, as the task and probe-read helpers require. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * syscribe's resident recorder: ONE program for every recording on the node. It looks the task's
 * mount namespace up in `recordings` (inode -> slot) and, only for the namespaces being recorded,
 * counts the call in that slot's counters. Starting a recording is a map insert; ending it reads and
 * clears its slot. The cost of a syscall is one hash lookup however many recordings run (the
 * per-container object, recorder.bpf.c, costs one program run per recording).
 *
 * Kernel memory does not depend on the number of CPUs: the counters are plain (not per-CPU) arrays
 * updated with atomic adds. Per slot: NR_PHASES x NR_KINDS x NR_NUMBERS u64 = 24 KiB.
 *
 * The layout is mirrored in src/syscribe/recorder/resident.py, which checks the map sizes at load
 * time and again when it picks up pinned maps after a restart.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

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

/* Slots (concurrent recordings); userspace may raise it before load (bpf_map__set_max_entries). */
#define NR_RECORDINGS 1024
/* Syscall numbers counted in the array; larger ones go to `extra`. Every table in use today (x86_64
 * ~470, i386 ~470, arm64 ~470) fits, with room. */
#define NR_NUMBERS 512
#define NR_KINDS 3
#define NR_PHASES 2
#define NR_COUNTERS (NR_PHASES * NR_KINDS * NR_NUMBERS)
/* The prefilter: one bit per value of the inode's low 16 bits, set for every namespace recorded. */
#define FILTER_BITS 65536
#define FILTER_WORDS (FILTER_BITS / 64)

enum kind {
	KIND_NATIVE = 0,
	KIND_I386 = 1,
	KIND_X32 = 2,
};

enum compat_mode {
	COMPAT_NONE = 0,
	COMPAT_X86 = 1,
};

enum phase {
	PHASE_COUNTED = 0,
	PHASE_BEFORE = 1, /* before the slot's anchor syscall */
};

enum anchor_mode {
	ANCHOR_NONE = 0,
	ANCHOR_SYSCALL = 1,
};

#define X86_TS_COMPAT 0x0002
#define X32_SYSCALL_BIT 0x40000000UL

struct config {
	__u32 compat_mode;
};

const volatile struct config cfg = {
	.compat_mode = COMPAT_NONE,
};

/* Set by userspace when it starts a recording, before the namespace goes into `recordings`. */
struct slot_info {
	__u32 anchor_mode;
	__u32 anchor_nr;
	__u32 anchored; /* set by the program at the slot's first anchor call */
	__u32 pad;
	__u64 lost; /* calls that could not be counted (extra full) */
};

struct slot_counts {
	__u64 calls[NR_COUNTERS]; /* [phase][kind][nr] */
};

/* Most syscalls on a node come from namespaces not being recorded: for them one array load and a
 * bit test (as cheap as the per-container program's compare) instead of a hash lookup. Userspace
 * sets a namespace's bit before inserting it in `recordings` and clears bits only after deleting, so
 * a bit is never missing for a recorded namespace; a stale or shared bit only costs the lookup. */
struct filter {
	__u64 bits[FILTER_WORDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct filter);
} filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NR_RECORDINGS);
	__type(key, __u32);   /* mount namespace inode */
	__type(value, __u32); /* slot */
} recordings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NR_RECORDINGS);
	__type(key, __u32);
	__type(value, struct slot_counts);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NR_RECORDINGS);
	__type(key, __u32);
	__type(value, struct slot_info);
} info SEC(".maps");

struct extra_key {
	__u64 nr;
	__u32 slot;
	__u16 kind;
	__u16 phase;
};

/* Numbers beyond NR_NUMBERS, for every slot: bounded, shared; a full map counts the call as lost. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct extra_key);
	__type(value, __u64);
} extra SEC(".maps");

static __always_inline void count_extra(struct slot_info *inf, __u32 slot, __u32 kind, __u64 nr,
					__u32 phase)
{
	struct extra_key key = { .nr = nr, .slot = slot, .kind = kind, .phase = phase };
	__u64 one = 1;
	__u64 *v = bpf_map_lookup_elem(&extra, &key);

	if (v) {
		__sync_fetch_and_add(v, 1);
		return;
	}
	if (bpf_map_update_elem(&extra, &key, &one, BPF_NOEXIST) == 0)
		return;
	v = bpf_map_lookup_elem(&extra, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		__sync_fetch_and_add(&inf->lost, 1);
}

static __always_inline void count(__u32 mnt_ns, long id, __u32 ts_status)
{
	__u32 zero = 0;
	struct filter *f = bpf_map_lookup_elem(&filter, &zero);
	__u32 bit = mnt_ns & (FILTER_BITS - 1);

	if (!f || !(f->bits[bit / 64] & (1ULL << (bit % 64))))
		return;

	__u32 *found = bpf_map_lookup_elem(&recordings, &mnt_ns);

	if (!found)
		return;
	__u32 slot = *found;
	struct slot_info *inf = bpf_map_lookup_elem(&info, &slot);
	struct slot_counts *c = bpf_map_lookup_elem(&counts, &slot);

	if (!inf || !c)
		return;

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

	__u32 phase = PHASE_COUNTED;

	if (inf->anchor_mode == ANCHOR_SYSCALL && !inf->anchored) {
		if (kind == KIND_NATIVE && id == (long)inf->anchor_nr)
			inf->anchored = 1;
		else
			phase = PHASE_BEFORE;
	}
	if (nr < NR_NUMBERS) {
		__u64 idx = ((__u64)phase * NR_KINDS + kind) * NR_NUMBERS + nr;

		if (idx < NR_COUNTERS)
			__sync_fetch_and_add(&c->calls[idx], 1);
	} else {
		count_extra(inf, slot, kind, nr, phase);
	}
}

/* Kernels >= 5.11: a BTF task pointer, plain fault-safe loads (a task without nsproxy reads 0). */
SEC("raw_tracepoint/sys_enter")
int resident_count(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 status = 0;

	if (cfg.compat_mode == COMPAT_X86 && bpf_core_field_exists(task->thread_info.status))
		status = task->thread_info.status;
	count(task->nsproxy->mnt_ns->ns.inum, (long)ctx->args[1], status);
	return 0;
}

/* Older kernels with BTF: the same reads through bpf_probe_read_kernel. */
SEC("raw_tracepoint/sys_enter")
int resident_count_probe_read(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 status = 0;

	if (cfg.compat_mode == COMPAT_X86 && bpf_core_field_exists(task->thread_info.status))
		status = BPF_CORE_READ(task, thread_info.status);
	count(BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum), (long)ctx->args[1], status);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

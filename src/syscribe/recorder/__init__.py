"""Syscall recorders: an eBPF program that counts the syscalls of one namespace."""

"""The eBPF program's source and its precompiled CO-RE object (package data)."""

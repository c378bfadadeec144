"""syscribe: record seccomp profiles for containers with eBPF, and explain their denials."""

__version__ = "0.1.0"

"""The CRI-O / podman OCI prestart hook (installed as ``syscribe.hooks``)."""

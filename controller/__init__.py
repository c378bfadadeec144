"""Profile recording by pod labels (installed as ``syscribe.controller``)."""

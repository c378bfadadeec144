"""The audit-log enricher (installed as ``syscribe.enricher``)."""

"""slawatch agent: probes components, keeps their state, and stores what it sees."""

__version__ = "0.1.0"

"""slawatch agent: probes components, keeps their state, and stores what it sees."""

"""The incident desk: confirmed faults become incidents, are notified, acknowledged and measured against the contract."""

"""The incident desk: confirmed faults become incidents, notified, acknowledged and measured against the contract."""

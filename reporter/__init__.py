"""slawatch reporter: availability per component against its contract, as a monthly report."""

"""Fixtures for sink tests: the real influxd servers of tests/sinks/influx.py."""

from tests.sinks.influx import influxd, influxd_auth

__all__ = ["influxd", "influxd_auth"]

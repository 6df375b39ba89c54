"""Fixtures for reporter tests: the real influxd of tests/sinks/influx.py."""

from tests.sinks.influx import influxd

__all__ = ["influxd"]

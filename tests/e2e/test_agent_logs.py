"""What the real agent logs: DEGRADED (a UPS on battery) and back, JSON fields of state changes, the IPv6 listen URL."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import demoups
from slawatch.config.loader import bundled_contract
from slawatch.testing import free_port, need
from slawatch.testing.agentproc import AgentProcess

Spawn = Callable[..., AgentProcess]


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def ups() -> Iterator[tuple[demoups.DemoUps, int]]:
    """The demo's SNMP UPS on loopback, in a thread with its own event loop; `forced` pins it on battery."""
    unit = demoups.DemoUps()
    unit.forced = False
    port = free_port(socket.SOCK_DGRAM)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        transport, _ = loop.run_until_complete(demoups.start(unit, "127.0.0.1", port))
        started.set()
        loop.run_forever()
        transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    yield unit, port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def records(agent: AgentProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in agent.lines if line.startswith("{")]


def write_config(tmp_path: Path, ups_port: int, listen: str) -> Path:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: test-agent, listen: "{listen}", heartbeat_s: 1}}
storage: {{sqlite: {{path: {tmp_path / 'store.db'}}}, spool: {{path: {tmp_path / 'spool'}}}}}
contract: {bundled_contract()}
defaults: {{interval_s: 0.5, timeout_s: 0.4, confirm: {{down: 1, up: 1}}}}
customers: [{{name: acme, tier: gold}}]
components:
  - name: ups-1
    class: power
    customer: acme
    probes: [{{kind: ups, target: "127.0.0.1:{ups_port}"}}]
  - name: lb-1
    class: load_balancer
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{free_port()}"}}]
""")
    return cfg


@pytest.mark.timeout(90)
def test_degraded_is_logged_with_its_reason_and_so_is_its_end(tmp_path: Path, spawn: Spawn,
                                                              ups: tuple[demoups.DemoUps, int]) -> None:
    unit, ups_port = ups
    agent = spawn(write_config(tmp_path, ups_port, f"127.0.0.1:{free_port()}"))
    agent.wait_for("ups-1 is up")
    unit.forced = True
    line = agent.wait_for("ups-1 is DEGRADED")
    assert "WARNING agent.state: ups-1 is DEGRADED: on battery: upsOutputSource=battery(5)" in line
    unit.forced = False
    line = agent.wait_for("ups-1 is no longer degraded")
    assert "INFO    agent.state: ups-1 is no longer degraded" in line
    assert agent.stop() == 0
    assert agent.log.count("ups-1 is DEGRADED") == 1


@pytest.mark.timeout(90)
def test_json_logs_of_state_changes_carry_component_state_and_reason(tmp_path: Path, spawn: Spawn,
                                                                     ups: tuple[demoups.DemoUps, int]) -> None:
    unit, ups_port = ups
    agent = spawn(write_config(tmp_path, ups_port, f"127.0.0.1:{free_port()}"), log_format="json")
    agent.wait_for("lb-1 is DOWN")
    agent.wait_for("ups-1 is up")
    docs = records(agent)
    (down,) = [d for d in docs if d["msg"].startswith("lb-1 is DOWN")]
    assert (down["level"], down["component"], down["state"], down["reason"]) == (
        "warning", "lb-1", "down", "connection refused")
    (up,) = [d for d in docs if d["msg"] == "ups-1 is up"]
    assert (up["level"], up["component"], up["state"], up["reason"]) == ("info", "ups-1", "up", "")

    unit.forced = True
    agent.wait_for("ups-1 is DEGRADED")
    assert agent.stop() == 0
    docs = records(agent)
    assert len(docs) == len(agent.lines)  # every line is one JSON document
    (degraded,) = [d for d in docs if "is DEGRADED" in d["msg"]]
    assert (degraded["level"], degraded["component"], degraded["state"]) == ("warning", "ups-1", "degraded")
    assert degraded["reason"].startswith("on battery: upsOutputSource=battery(5)")
    assert degraded["msg"] == f"ups-1 is DEGRADED: {degraded['reason']}"


@pytest.mark.timeout(60)
def test_the_listen_url_of_an_ipv6_address_is_bracketed(tmp_path: Path, spawn: Spawn,
                                                        ups: tuple[demoups.DemoUps, int]) -> None:
    need(_has_ipv6(), "IPv6 is disabled on this machine")
    port = free_port(host="::1")
    agent = spawn(write_config(tmp_path, ups[1], f"[::1]:{port}"))
    line = agent.wait_for("serving /metrics")
    assert line.endswith(f"serving /metrics, /healthz and the console on http://[::1]:{port}/")
    assert agent.stop() == 0

"""A reload that fails, however it fails, keeps the running config and sets the reload metric to 0."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from slawatch.cli.agent import build_agent
from slawatch.config.loader import load
from slawatch.testing import free_port
from slawatch.testing.agentproc import ROOT
from tests.e2e.agentconfig import write_config


def metric(port: int, name: str) -> str | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return next((line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")), None)


def wait_metric(port: int, name: str, value: str, timeout_s: float = 10.0) -> str | None:
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = metric(port, name)
        except OSError:
            seen = None
        if seen == value:
            break
        time.sleep(0.1)
    return seen


@pytest.mark.timeout(90)
def test_sighup_with_hostile_configs_keeps_the_agent_and_says_so(tmp_path: Path) -> None:
    listen = free_port()
    cfg = write_config(tmp_path, free_port(), interval=0.5, listen_port=listen)
    good = cfg.read_text()
    proc = subprocess.Popen([sys.executable, "-m", "slawatch.cli", "agent", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        name = "slawatch_config_last_reload_successful"
        assert wait_metric(listen, name, "1.0") == "1.0"
        # 500 levels of nesting: was a RecursionError that ended the reload task with the metric left at 1
        cfg.write_text(good + "extra: " + "[" * 500 + "]" * 500 + "\n")
        proc.send_signal(signal.SIGHUP)
        assert wait_metric(listen, name, "0.0") == "0.0"
        # a good file again: the reloads still work
        cfg.write_text(good)
        proc.send_signal(signal.SIGHUP)
        assert wait_metric(listen, name, "1.0") == "1.0"
        # an alias bomb: refused at once, in little memory
        bomb = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        bomb += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
        cfg.write_text(good + "\n".join(bomb) + "\n")
        proc.send_signal(signal.SIGHUP)
        assert wait_metric(listen, name, "0.0") == "0.0"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-3000:]
    assert "reload rejected, keeping the running config: " in err
    assert "nested more than 64 levels deep" in err
    assert "YAML aliases expand to more than 100000 nodes" in err
    assert "Traceback" not in err and "RecursionError" not in err
    assert "config reloaded from" in err


async def test_an_unexpected_reload_error_keeps_the_config_and_sets_the_metric(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port())
    agent = build_agent(load(cfg))
    try:
        assert await agent.reload() is True
        running = agent.loaded
        # a path the OS cannot even take (NUL byte): a ValueError, not a config problem
        agent.loaded = dataclasses.replace(running, path=Path(str(cfg) + "\0"))
        assert await agent.reload() is False
        assert agent.metrics.registry.get_sample_value("slawatch_config_last_reload_successful") == 0
        assert agent.loaded.config is running.config
        assert set(agent.states) == {"san-1"}
    finally:
        agent.spool.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("setting", ["interval_s: .inf", "interval_s: 1e300", "timeout_s: .nan"])
def test_the_agent_refuses_to_start_on_an_absurd_duration(tmp_path: Path, setting: str) -> None:
    """An infinite interval made NaN due times: the agent spun at 100 % CPU and ignored SIGTERM."""
    cfg = write_config(tmp_path, free_port(), interval=0.5)
    cfg.write_text(cfg.read_text().replace('probes: [{kind: tcp, target: "127.0.0.1:',
                                           f'probes: [{{kind: tcp, {setting}, target: "127.0.0.1:'))
    assert setting in cfg.read_text()
    proc = subprocess.Popen([sys.executable, "-m", "slawatch.cli", "agent", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 2, err[-2000:]
    field = setting.split(":")[0]
    assert f"components[0].probes[0].{field}: must be from" in err

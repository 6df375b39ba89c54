"""The ups probe against snmpsim serving UPS-MIB recordings (tests/fixtures/snmp/ups-*.snmprec)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from agent.probes import run_probe
from slawatch.config.probes import UpsProbe
from slawatch.model import Outcome, Result
from slawatch.testing.snmp import Sim
from tests.probes.snmphelpers import (  # noqa: F401  (fresh_snmp_state is an autouse fixture)
    DECODER_CRASH,
    SLACK_S,
    assert_no_traceback,
    fresh_snmp_state,
    garbage_peer,
    run_snmpsim,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.peer("snmpsim")]

NORMAL = "upsBatteryStatus=batteryNormal(2)"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with run_snmpsim(tmp_path_factory) as peer:
        yield peer


def ups(sim: Sim, community: str, **kw: object) -> UpsProbe:
    return UpsProbe.model_validate({"kind": "ups", "target": sim.target, "community": community, "timeout_s": 2.0,
                                    **kw})


CASES = {
    "ups-online": (Outcome.UP, ""),
    "ups-onbattery": (Outcome.DEGRADED, f"on battery: upsOutputSource=battery(5), {NORMAL}, 30 min remaining, "
                                        "80% charge, 1 alarm present"),
    "ups-batterylow": (Outcome.DEGRADED, "on battery, battery low: upsOutputSource=battery(5), "
                                         "upsBatteryStatus=batteryLow(3), 12 min remaining, 15% charge, "
                                         "2 alarms present"),
    "ups-depleted": (Outcome.BAD_RESPONSE, "on battery, battery depleted: upsOutputSource=battery(5), "
                                           "upsBatteryStatus=batteryDepleted(4), 0 min remaining, 0% charge, "
                                           "3 alarms present"),
    # this recording has no estimates at all: under v1 that is a noSuchName the probe retries around
    "ups-outputnone": (Outcome.BAD_RESPONSE, "output off: upsOutputSource=none(2), upsBatteryStatus=unknown(1), "
                                             "1 alarm present"),
    "ups-alarms": (Outcome.UP, f"upsOutputSource=normal(3), {NORMAL}, 40 min remaining, 95% charge, "
                               "2 alarms present"),
    "ups-bypass": (Outcome.DEGRADED, f"on bypass (load unprotected): upsOutputSource=bypass(4), {NORMAL}, "
                                     "45 min remaining, 100% charge, 1 alarm present"),
    "ups-wrongtype": (Outcome.BAD_RESPONSE, "upsOutputSource (1.3.6.1.2.1.33.1.4.1.0): wrong type OctetString "
                                            "'normal', expected an INTEGER enumeration"),
}


@pytest.mark.parametrize("version", ["2c", "1"])
@pytest.mark.parametrize("community", list(CASES))
async def test_ups_states(sim: Sim, community: str, version: str) -> None:
    run = await run_probe(ups(sim, community, version=version))
    outcome, reason = CASES[community]
    assert (run.result.outcome, run.result.reason) == (outcome, reason)
    assert run.result.latency_s is not None and run.result.latency_s < 1.0


@pytest.mark.parametrize(("version", "why"), [("2c", "noSuchInstance"), ("1", "agent answered noSuchName")])
async def test_missing_output_source_is_a_bad_response(sim: Sim, version: str, why: str) -> None:
    run = await run_probe(ups(sim, "ups-missing", version=version))
    assert (run.result.outcome, run.result.reason) == (
        Outcome.BAD_RESPONSE, f"upsOutputSource (1.3.6.1.2.1.33.1.4.1.0): {why}")


async def test_no_answer_is_a_timeout_within_the_deadline(sim: Sim) -> None:
    t0 = time.perf_counter()
    run = await run_probe(ups(sim, "no-such-ups", timeout_s=0.5))
    assert run.result == Result(Outcome.TIMEOUT, f"no SNMP answer from {sim.target} within 0.45s "
                                                 "(no agent, wrong community, or filtered)")
    assert time.perf_counter() - t0 <= 0.5 + SLACK_S


async def test_garbage_is_a_malformed_response_without_a_traceback(caplog: pytest.LogCaptureFixture,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    async with garbage_peer(lambda request: [DECODER_CRASH]) as target:
        t0 = time.perf_counter()
        run = await run_probe(UpsProbe.model_validate({"kind": "ups", "target": target, "community": "x",
                                                       "timeout_s": 1.0}))
        elapsed = time.perf_counter() - t0
    assert run.result == Result(Outcome.BAD_RESPONSE,
                                f"malformed SNMP response from {target} (no valid answer within 0.9s)")
    assert elapsed <= 1.0 + SLACK_S
    assert_no_traceback(caplog, capsys)

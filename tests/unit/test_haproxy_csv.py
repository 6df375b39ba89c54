"""HAProxy stats CSV parsing and pool judgement, from a real captured CSV and from tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.probes.haproxy import Member, csv_url, parse_stats, pool_result
from slawatch.model import Outcome, Result

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "haproxy"
MIXED = (FIXTURES / "stats-mixed.csv").read_text()

HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
          "status,weight\n")


def row(px: str, sv: str, status: str) -> str:
    return f"{px},{sv},0,0,0,0,,0,0,0,,0,,0,0,0,0,{status},1\n"


def pool(*statuses: str) -> dict[str, list[Member]]:
    return {"web": [Member(f"web{i}", s) for i, s in enumerate(statuses, 1)]}


def test_captured_csv_members_in_order() -> None:
    pools = parse_stats(MIXED)
    assert list(pools) == ["web", "api"]  # frontend-only proxies (stats, fe) are not backends
    assert [(m.name, m.status) for m in pools["web"]] == [
        ("web1", "UP"), ("web2", "DOWN"), ("web3", "MAINT"), ("web4", "DRAIN"), ("web5", "no check"),
        ("web6", "NOLB"), ("web7", "UP 995/1000"), ("web8", "DOWN 3/1000"), ("web9", "MAINT (via web/web3)"),
    ]
    assert pools["api"] == [Member("api1", "UP")]


@pytest.mark.parametrize(("status", "serving"), [
    ("UP", True), ("UP 995/1000", True), ("no check", True),
    ("DOWN", False), ("DOWN 3/1000", False), ("NOLB", False), ("DRAIN", False), ("MAINT", False),
    ("MAINT (via web/web3)", False), ("MAINT (resolution)", False), ("", False), ("UPPER", False),
])
def test_which_statuses_serve(status: str, serving: bool) -> None:
    assert Member("s", status).serving is serving


@pytest.mark.parametrize(("backend", "min_up", "expected"), [
    ("api", 1, Result(Outcome.UP)),
    ("web", 3, Result(Outcome.DEGRADED, "3 of 9 members UP (web2 DOWN, web3 MAINT, web4 DRAIN, web6 NOLB, "
                                        "web8 DOWN 3/1000, web9 MAINT (via web/web3))")),
    ("web", 4, Result(Outcome.BAD_RESPONSE, "3 of 9 members UP, need 4 (web2 DOWN, web3 MAINT, web4 DRAIN, "
                                            "web6 NOLB, web8 DOWN 3/1000, web9 MAINT (via web/web3))")),
    ("nope", 1, Result(Outcome.BAD_RESPONSE, "backend 'nope' not in stats (backends: web, api)")),
    ("fe", 1, Result(Outcome.BAD_RESPONSE, "backend 'fe' not in stats (backends: web, api)")),
])
def test_captured_csv_judged(backend: str, min_up: int, expected: Result) -> None:
    assert pool_result(parse_stats(MIXED), backend, min_up) == expected


@pytest.mark.parametrize(("statuses", "min_up", "expected"), [
    (("UP", "UP", "UP"), 1, Result(Outcome.UP)),
    (("UP", "UP", "DOWN"), 2, Result(Outcome.DEGRADED, "2 of 3 members UP (web3 DOWN)")),
    (("UP", "DOWN", "MAINT"), 2, Result(Outcome.BAD_RESPONSE, "1 of 3 members UP, need 2 (web2 DOWN, web3 MAINT)")),
    (("DOWN", "DOWN", "DOWN"), 1, Result(Outcome.BAD_RESPONSE,
                                         "0 of 3 members UP, need 1 (web1 DOWN, web2 DOWN, web3 DOWN)")),
    (("UP 1/3", "no check"), 2, Result(Outcome.UP)),
    (("UP",), 2, Result(Outcome.BAD_RESPONSE, "1 of 1 members UP, need 2")),
    ((), 1, Result(Outcome.BAD_RESPONSE, "0 of 0 members UP, need 1 (backend has no servers)")),
    (("DOWN",) * 10 + ("UP",), 1, Result(Outcome.DEGRADED, "1 of 11 members UP (web1 DOWN, web2 DOWN, web3 DOWN, "
                                         "web4 DOWN, web5 DOWN, web6 DOWN, web7 DOWN, web8 DOWN and 2 more)")),
])
def test_pool_table(statuses: tuple[str, ...], min_up: int, expected: Result) -> None:
    assert pool_result(pool(*statuses), "web", min_up) == expected


def test_listen_section_and_quoted_fields() -> None:
    text = HEADER + row("www", "FRONTEND", "OPEN") + row("www", "a", "UP") + row("www", "b", '"MAINT (via x/y)"') \
        + row("www", "BACKEND", "UP")
    assert parse_stats(text) == {"www": [Member("a", "UP"), Member("b", "MAINT (via x/y)")]}


def test_backend_declared_before_its_servers_would_still_collect_them() -> None:
    text = HEADER + row("b", "BACKEND", "DOWN") + row("b", "s1", "DOWN")
    assert parse_stats(text) == {"b": [Member("s1", "DOWN")]}


@pytest.mark.parametrize(("text", "message"), [
    ("<html><body>Statistics Report</body></html>", "not HAProxy stats CSV (first line '<html><body>Statistics Rep"),
    ("", "not HAProxy stats CSV (first line '')"),
    ("# pxname,svname,qcur\nweb,web1,0\n", "HAProxy stats CSV without a status column"),
])
def test_not_stats_csv(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_stats(text)


@pytest.mark.parametrize(("url", "expected"), [
    ("http://lb:8404/stats", "http://lb:8404/stats;csv"),
    ("http://lb:8404/stats;csv", "http://lb:8404/stats;csv"),
    ("http://lb:8404/stats;csv;norefresh", "http://lb:8404/stats;csv;norefresh"),
    ("https://lb/haproxy?stats", "https://lb/haproxy?stats;csv"),
    ("http://lb/stats?scope=web", "http://lb/stats?scope=web;csv"),
    ("http://lb:8404", "http://lb:8404/;csv"),
])
def test_csv_url(url: str, expected: str) -> None:
    assert csv_url(url) == expected

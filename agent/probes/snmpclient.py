"""Shared SNMP access over pysnmp 7 asyncio: warmed engines reused per event loop, auth from settings, one GET."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
import weakref
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pysnmp.smi
from pyasn1.type import univ  # type: ignore[import-untyped]  # no stubs, and not in pyproject's overrides
from pysnmp.carrier.asyncio.dispatch import AsyncioDispatcher
from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    USM_AUTH_HMAC96_MD5,
    USM_AUTH_HMAC96_SHA,
    USM_AUTH_HMAC128_SHA224,
    USM_AUTH_HMAC192_SHA256,
    USM_AUTH_HMAC256_SHA384,
    USM_AUTH_HMAC384_SHA512,
    USM_AUTH_NONE,
    USM_PRIV_CBC56_DES,
    USM_PRIV_CBC168_3DES,
    USM_PRIV_CFB128_AES,
    USM_PRIV_CFB192_AES,
    USM_PRIV_CFB256_AES,
    USM_PRIV_NONE,
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    Udp6TransportTarget,
    UdpTransportTarget,
    UsmUserData,
    get_cmd,
)
from pysnmp.proto import errind, rfc1902, rfc1905
from pysnmp.smi import builder, view

from agent.probes.base import inner_timeout
from slawatch.config.probes import SnmpAccess
from slawatch.config.units import split_host_port
from slawatch.model import Outcome, Result

log = logging.getLogger(__name__)

AUTH_PROTOCOLS = {
    "MD5": USM_AUTH_HMAC96_MD5,
    "SHA": USM_AUTH_HMAC96_SHA,
    "SHA224": USM_AUTH_HMAC128_SHA224,
    "SHA256": USM_AUTH_HMAC192_SHA256,
    "SHA384": USM_AUTH_HMAC256_SHA384,
    "SHA512": USM_AUTH_HMAC384_SHA512,
}
# AES192/AES256 use pysnmp's default (Reeder/"Cisco" key extension); SnmpV3 has no setting for the
# Blumenthal variant that some agents expect.
PRIV_PROTOCOLS = {
    "DES": USM_PRIV_CBC56_DES,
    "3DES": USM_PRIV_CBC168_3DES,
    "AES": USM_PRIV_CFB128_AES,
    "AES192": USM_PRIV_CFB192_AES,
    "AES256": USM_PRIV_CFB256_AES,
}

# pysnmp counts request timeouts in dispatcher ticks; its default tick (0.1 s) would make a 0.9 s
# timeout fire anywhere up to 1.0 s, i.e. after the wrapper's deadline.
TIMER_RESOLUTION_S = 0.02

# pysnmp ciphers (DES/AES) through the optional `cryptography` package; without it every authPriv
# request fails with an indication that looks like a wrong priv_key.
CIPHERS = importlib.util.find_spec("cryptography") is not None

MISSING = ("noSuchObject", "noSuchInstance", "endOfMibView")

# How many senders of undecodable datagrams a dispatcher remembers (the oldest is forgotten first).
MALFORMED_SENDERS = 1024


@dataclass(frozen=True, slots=True)
class Value:
    """One var-bind value, lifted out of pysnmp: `syntax` is the SMI type name, `value` plain Python
    (int for Integer/Counter/Gauge/TimeTicks, str for OctetString/IpAddress/OID, None when missing)."""

    syntax: str
    value: int | str | None

    @property
    def missing(self) -> bool:
        return self.syntax in MISSING

    def show(self) -> str:
        if self.missing or self.value is None:
            return self.syntax
        if isinstance(self.value, int):
            return str(self.value)
        return repr(self.value)


@dataclass(frozen=True, slots=True)
class Reply:
    """What one GET got back. `error_status` is a PDU error (e.g. noSuchName in v1) that `error_oid`
    caused; `latency_s` covers the request only (not the one-off engine warm-up)."""

    values: Mapping[str, Value]
    latency_s: float
    error_status: str | None = None
    error_oid: str | None = None


@dataclass(slots=True)
class _LoopEngines:
    engines: dict[Hashable, asyncio.Task[Any]] = field(default_factory=dict)


_mib_lock = threading.Lock()
_mib_view: Any = None
# One engine per (event loop, credential set): a pysnmp engine is bound to the loop its dispatcher
# was made on, and one engine holds one USM key per user name, so two v3 credential sets sharing a
# user name must not share an engine (the second would silently re-key the first's requests).
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopEngines] = weakref.WeakKeyDictionary()


def normalize_oid(oid: str) -> str:
    return oid.strip().lstrip(".")


class _NoMibCompiler:
    """Stands in for pysmi's ASN.1 MIB compiler. pysnmp attaches that compiler to a MIB builder on first use
    when pysmi is installed, and building its parser costs 0.5-1 s of CPU, which alone would blow a 1 s
    first-probe deadline. Probes only use numeric OIDs, so nothing needs compiling: a module that is not
    bundled with pysnmp is reported missing, as it would be without pysmi."""

    def compile(self, *names: str, **options: Any) -> dict[str, str]:
        return dict.fromkeys(names, "missing")


def _shared_mib_view() -> Any:
    """The MIB view every engine uses to resolve OIDs (~0.06 s to build): built once per process, in a
    worker thread, then only read."""
    global _mib_view
    with _mib_lock:
        if _mib_view is None:
            mib_builder = builder.MibBuilder()
            mib_builder.set_mib_compiler(_NoMibCompiler(), str(Path(pysnmp.smi.__file__).parent / "mibs"))
            mib_view = view.MibViewController(mib_builder)
            ObjectType(ObjectIdentity("1.3.6.1.2.1.1.3.0")).resolve_with_mib(mib_view)
            _mib_view = mib_view
        return _mib_view


def _new_engine() -> Any:
    """Build an engine off the loop (its own framework MIBs take ~0.15 s); no dispatcher yet."""
    engine = SnmpEngine()
    engine.cache["mibViewController"] = _shared_mib_view()
    return engine


async def warm() -> None:
    """Load pysnmp's base MIBs and build this loop's v1/v2c engine now (call it at daemon start), so the
    first probe does not spend ~0.1-0.3 s of its deadline on it. Without it the first probe does this
    lazily, in a worker thread (measured 0.2-0.4 s for a whole first probe on loopback)."""
    await _engine(("community",))


async def _engine(key: Hashable) -> Any:
    loop = asyncio.get_running_loop()
    engines = _loops.setdefault(loop, _LoopEngines()).engines
    task = engines.get(key)
    if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
        task = loop.create_task(_make_engine(loop))
        engines[key] = task
    # shield: one probe's deadline must not cancel the warm-up other probes (and the next run) wait on
    return await asyncio.shield(task)


class _Dispatcher(AsyncioDispatcher):  # type: ignore[misc]  # pysnmp has no type hints
    """pysnmp's asyncio dispatcher, noting per sender (host, port) when it last sent a datagram pysnmp could not
    decode. pysnmp drops most garbage silently (counting it in snmpInASNParseErrs) but lets some decoder errors
    escape into the event loop's exception handler, a traceback in the log; either way the probe would only say
    "no answer". A note, not a failure: a valid answer may still follow before the deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.malformed: dict[tuple[str, int], float] = {}
        self._counters: tuple[Any, ...] = ()

    def watch(self, engine: Any) -> None:
        """Read the engine's parse error counters to tell what it dropped as undecodable."""
        self._counters = engine.get_mib_builder().import_symbols(
            "__SNMPv2-MIB", "snmpInASNParseErrs", "snmpInBadVersions")

    def _parse_errors(self) -> int:
        return sum(int(counter.syntax) for counter in self._counters)

    def _callback_function(self, transport: Any, address: Any, message: Any) -> None:
        before = self._parse_errors()
        try:
            super()._callback_function(transport, address, message)
        except Exception as exc:  # a decoder bug on hostile input (pyasn1 raises TypeError for some)
            log.debug("undecodable SNMP datagram from %s: %s: %s", address, type(exc).__name__, exc)
            self._note(address)
            return
        if self._parse_errors() != before:
            self._note(address)

    def _note(self, address: Any) -> None:
        key = (str(address[0]), int(address[1]))
        self.malformed.pop(key, None)
        self.malformed[key] = self.loop.time()
        if len(self.malformed) > MALFORMED_SENDERS:
            del self.malformed[next(iter(self.malformed))]

    def malformed_since(self, address: Any, since: float) -> bool:
        seen = self.malformed.get((str(address[0]), int(address[1])))
        return seen is not None and seen >= since


async def _make_engine(loop: asyncio.AbstractEventLoop) -> Any:
    engine = await asyncio.to_thread(_new_engine)
    dispatcher = _Dispatcher(loop)
    dispatcher.set_timer_resolution(TIMER_RESOLUTION_S)
    engine.register_transport_dispatcher(dispatcher)
    dispatcher.watch(engine)
    return engine


async def close() -> None:
    """Close this loop's engines and their sockets (daemon shutdown, end of a test)."""
    loop = asyncio.get_running_loop()
    entry = _loops.pop(loop, None)
    if entry is None:
        return
    for task in entry.engines.values():
        if not task.done():
            task.cancel()
            continue
        if task.cancelled() or task.exception() is not None:
            continue
        task.result().close_dispatcher()  # closes its sockets too


def _engine_key(settings: SnmpAccess) -> Hashable:
    if settings.version != "3" or settings.v3 is None:
        return ("community",)
    v3 = settings.v3
    return (
        "usm",
        v3.user,
        v3.auth_protocol,
        v3.auth_key.get_secret_value() if v3.auth_key else None,
        v3.priv_protocol,
        v3.priv_key.get_secret_value() if v3.priv_key else None,
    )


def auth_data(settings: SnmpAccess) -> Any:
    """pysnmp credentials for the settings: community (v1/v2c) or a USM user (v3)."""
    if settings.version != "3" or settings.v3 is None:
        return CommunityData(settings.community.get_secret_value(), mpModel=0 if settings.version == "1" else 1)
    v3 = settings.v3
    auth_key = v3.auth_key.get_secret_value() if v3.auth_key and v3.auth_protocol else None
    priv_key = v3.priv_key.get_secret_value() if auth_key and v3.priv_key and v3.priv_protocol else None
    return UsmUserData(
        v3.user,
        authKey=auth_key,
        privKey=priv_key,
        authProtocol=AUTH_PROTOCOLS[v3.auth_protocol] if auth_key and v3.auth_protocol else USM_AUTH_NONE,
        privProtocol=PRIV_PROTOCOLS[v3.priv_protocol] if priv_key and v3.priv_protocol else USM_PRIV_NONE,
    )


def attempts(budget_s: float) -> tuple[float, int]:
    """(per-request timeout, retries) within a budget: one retry when each try still gets ≥ 1 s,
    so a single lost UDP datagram does not count as an outage."""
    if budget_s >= 2.0:
        return budget_s / 2, 1
    return budget_s, 0


def lift(value: Any) -> Value:
    """A pysnmp/pyasn1 value as a plain `Value`."""
    if isinstance(value, rfc1905.NoSuchObject):
        return Value("noSuchObject", None)
    if isinstance(value, rfc1905.NoSuchInstance):
        return Value("noSuchInstance", None)
    if isinstance(value, rfc1905.EndOfMibView):
        return Value("endOfMibView", None)
    syntax = type(value).__name__
    if isinstance(value, univ.Integer):
        return Value(syntax, int(value))
    if isinstance(value, rfc1902.IpAddress):
        return Value(syntax, value.prettyPrint())
    if isinstance(value, univ.OctetString):
        raw = bytes(value)
        try:
            return Value(syntax, raw.decode("utf-8"))
        except UnicodeDecodeError:
            return Value(syntax, "0x" + raw.hex())
    if isinstance(value, univ.ObjectIdentifier):
        return Value(syntax, str(value))
    return Value(syntax, None)


def where(settings: SnmpAccess) -> str:
    host, port = split_host_port(settings.target, 161)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def indication_result(indication: Any, settings: SnmpAccess, budget_s: float) -> Result:
    """Map a pysnmp error indication (it reports, it does not raise) to a Result with a precise reason."""
    peer = where(settings)
    user = settings.v3.user if settings.v3 else ""
    if isinstance(indication, errind.RequestTimedOut):
        return timeout_result(settings, budget_s)
    if isinstance(indication, errind.UnknownUserName):
        return Result(Outcome.REFUSED, f"SNMPv3 user {user!r} is unknown to {peer} (usmStatsUnknownUserNames)")
    if isinstance(indication, errind.WrongDigest):
        return Result(Outcome.REFUSED, f"SNMPv3 authentication failed at {peer} for user {user!r}: "
                                       "wrong auth_key or auth_protocol (usmStatsWrongDigests)")
    if isinstance(indication, errind.DecryptionError) and CIPHERS:
        return Result(Outcome.REFUSED, f"SNMPv3 decryption failed at {peer} for user {user!r}: "
                                       "wrong priv_key or priv_protocol (usmStatsDecryptionErrors)")
    if isinstance(indication, errind.UnsupportedSecurityLevel):
        return Result(Outcome.REFUSED, f"SNMPv3 security level not supported for user {user!r} at {peer} "
                                       "(check auth_key/priv_key against the agent's user)")
    if isinstance(indication, errind.NotInTimeWindow):
        return Result(Outcome.REFUSED, f"SNMPv3 message outside the time window of {peer} (usmStatsNotInTimeWindows)")
    if isinstance(indication, errind.UnknownEngineID):
        return Result(Outcome.REFUSED, f"SNMPv3 engine ID discovery failed at {peer} (usmStatsUnknownEngineIDs)")
    if isinstance(indication, errind.EncryptionError | errind.DecryptionError):
        return Result(Outcome.AGENT_ERROR, "SNMPv3 privacy needs the 'cryptography' package on this agent "
                                           f"({indication})")
    return Result(Outcome.BAD_RESPONSE, f"SNMP error from {peer}: {indication}")


def timeout_result(settings: SnmpAccess, budget_s: float) -> Result:
    if settings.version != "3":
        hint = " (no agent, wrong community, or filtered)"
    elif settings.v3 is not None and settings.v3.priv_key is not None:
        # net-snmp (and others) drop what they cannot decrypt without a report
        hint = " (no agent, wrong priv_key or priv_protocol, or filtered)"
    else:
        hint = " (no agent, or filtered)"
    return Result(Outcome.TIMEOUT, f"no SNMP answer from {where(settings)} within {budget_s:.3g}s{hint}")


def malformed_result(settings: SnmpAccess, budget_s: float) -> Result:
    return Result(Outcome.BAD_RESPONSE, f"malformed SNMP response from {where(settings)} "
                                        f"(no valid answer within {budget_s:.3g}s)")


async def get(settings: SnmpAccess, oids: Sequence[str], deadline: float | None = None) -> Reply | Result:
    """GET `oids` from the settings' target within `inner_timeout(settings)` (or by `deadline`, in loop
    time, for a second request of the same run). Returns the values, or a Result saying why there are
    none (timeout, auth failure, ...). Never raises."""
    if settings.v3 and settings.v3.priv_key and not CIPHERS:
        return Result(Outcome.AGENT_ERROR, "SNMPv3 privacy (priv_key) needs the 'cryptography' package "
                                           "installed next to pysnmp")
    loop = asyncio.get_running_loop()
    budget_s = inner_timeout(settings)
    if deadline is None:
        deadline = loop.time() + budget_s
    host, port = split_host_port(settings.target, 161)
    per_try_s, retries = attempts(budget_s)
    engine: Any = None
    target: Any = None
    sent = loop.time()

    def garbled() -> bool:
        """Whether the target sent undecodable datagrams during this request."""
        dispatcher = engine.transport_dispatcher if engine is not None else None
        return isinstance(dispatcher, _Dispatcher) and target is not None and dispatcher.malformed_since(
            target.transport_address, sent)

    try:
        async with asyncio.timeout_at(deadline):
            engine = await _engine(_engine_key(settings))
            target_cls = Udp6TransportTarget if ":" in host else UdpTransportTarget
            target = await target_cls.create((host, port), timeout=per_try_s, retries=retries)
            sent = loop.time()
            t0 = time.perf_counter()
            indication, status, index, var_binds = await get_cmd(
                engine, auth_data(settings), target, ContextData(),
                *(ObjectType(ObjectIdentity(normalize_oid(oid))) for oid in oids),
                lookupMib=False,
            )
            latency_s = time.perf_counter() - t0
    except TimeoutError:
        return malformed_result(settings, budget_s) if garbled() else timeout_result(settings, budget_s)
    except PySnmpError as exc:
        if "transport address" in str(exc):
            return Result(Outcome.UNREACHABLE, f"cannot resolve {host}: {exc}")
        return Result(Outcome.AGENT_ERROR, f"SNMP engine error: {exc}")
    if indication:
        if isinstance(indication, errind.RequestTimedOut) and garbled():
            return malformed_result(settings, budget_s)
        return indication_result(indication, settings, budget_s)
    values = {str(name): lift(value) for name, value in var_binds}
    if int(status):
        status_name = status.prettyPrint() if hasattr(status, "prettyPrint") else str(status)
        failed = normalize_oid(oids[int(index) - 1]) if 0 < int(index) <= len(oids) else None
        return Reply(values, latency_s, status_name, failed)
    return Reply(values, latency_s)

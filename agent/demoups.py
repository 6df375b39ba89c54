"""The demo's UPS: a minimal SNMPv2c GET responder serving UPS-MIB (RFC 1628) scalars and sysUpTime.

Runtime dependencies only (pysnmp's message codec and pyasn1's BER codec, no snmpsim). It answers GetRequest
with a Response; an object it does not serve answers noSuchObject; a wrong community, another SNMP version,
another PDU type or a datagram that does not decode gets no answer at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pyasn1.codec.ber import decoder, encoder  # type: ignore[import-untyped]  # no stubs
from pysnmp.proto import api

log = logging.getLogger(__name__)

V2C = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
UPS_OUTPUT_SOURCE = "1.3.6.1.2.1.33.1.4.1.0"  # other(1) none(2) normal(3) bypass(4) battery(5) ...
UPS_BATTERY_STATUS = "1.3.6.1.2.1.33.1.2.1.0"  # unknown(1) batteryNormal(2) batteryLow(3) batteryDepleted(4)
UPS_ALARMS_PRESENT = "1.3.6.1.2.1.33.1.6.1.0"
UPS_MINUTES_REMAINING = "1.3.6.1.2.1.33.1.2.3.0"
UPS_CHARGE_REMAINING = "1.3.6.1.2.1.33.1.2.4.0"

NORMAL, BATTERY = 3, 5
FULL_MINUTES = 45  # estimated runtime on a full battery


def _oid(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


class DemoUps:
    """A UPS that runs on battery for `battery_s` of every `cycle_s`, the first time `offset_s` after start.
    Set `forced` to True/False to pin it on battery/on mains (tests)."""

    def __init__(self, cycle_s: float = 300.0, battery_s: float = 30.0, offset_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cycle_s, self.battery_s, self.offset_s = cycle_s, battery_s, offset_s
        self.clock = clock
        self.started = clock()
        self.forced: bool | None = None

    def _phase(self) -> float:
        return (self.clock() - self.started - self.offset_s) % self.cycle_s

    def on_battery(self) -> bool:
        if self.forced is not None:
            return self.forced
        return self._phase() < self.battery_s

    def values(self) -> dict[tuple[int, ...], Any]:
        """OID -> SNMP value, as of now."""
        uptime = V2C.TimeTicks(int((self.clock() - self.started) * 100) % (1 << 32))
        if self.on_battery():
            drained = 0.0 if self.forced else self._phase() / 60.0  # minutes on battery so far
            minutes = max(0, 30 - int(drained))
            return {
                _oid(SYS_UPTIME): uptime,
                _oid(UPS_OUTPUT_SOURCE): V2C.Integer(BATTERY),
                _oid(UPS_BATTERY_STATUS): V2C.Integer(2),
                _oid(UPS_ALARMS_PRESENT): V2C.Gauge32(1),  # upsAlarmOnBattery
                _oid(UPS_MINUTES_REMAINING): V2C.Integer(minutes),
                _oid(UPS_CHARGE_REMAINING): V2C.Integer(max(0, 80 - int(drained * 2))),
            }
        return {
            _oid(SYS_UPTIME): uptime,
            _oid(UPS_OUTPUT_SOURCE): V2C.Integer(NORMAL),
            _oid(UPS_BATTERY_STATUS): V2C.Integer(2),
            _oid(UPS_ALARMS_PRESENT): V2C.Gauge32(0),
            _oid(UPS_MINUTES_REMAINING): V2C.Integer(FULL_MINUTES),
            _oid(UPS_CHARGE_REMAINING): V2C.Integer(100),
        }


def answer(request: bytes, ups: DemoUps, community: bytes) -> bytes | None:
    """The encoded Response to one SNMPv2c GetRequest datagram, or None when it gets no answer.
    Raises on what does not decode (the caller drops it)."""
    if int(api.decodeMessageVersion(request)) != api.SNMP_VERSION_2C:
        return None
    msg, _ = decoder.decode(request, asn1Spec=V2C.Message())
    if bytes(V2C.apiMessage.get_community(msg)) != community:
        return None
    pdu = V2C.apiMessage.get_pdu(msg)
    if not pdu.isSameTypeWith(V2C.GetRequestPDU()):
        return None
    values = ups.values()
    response = V2C.apiMessage.get_response(msg)
    binds = [(oid, values.get(tuple(oid), V2C.NoSuchObject())) for oid, _ in V2C.apiPDU.get_varbinds(pdu)]
    V2C.apiPDU.set_varbinds(V2C.apiMessage.get_pdu(response), binds)
    return bytes(encoder.encode(response))


class SnmpResponder(asyncio.DatagramProtocol):
    """Serves `ups` over UDP to SNMPv2c GETs with the right community. Never raises on what it receives."""

    def __init__(self, ups: DemoUps, community: str = "public") -> None:
        self.ups = ups
        self.community = community.encode()
        self.transport: asyncio.DatagramTransport | None = None
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            reply = answer(data, self.ups, self.community)
        except Exception as exc:  # garbage, truncated BER, wrong types: drop it, keep serving
            self.dropped += 1
            log.debug("demo UPS dropped an undecodable datagram from %s: %s", addr, exc)
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def start(ups: DemoUps, host: str = "127.0.0.1", port: int = 0, community: str = "public") -> (
        tuple[asyncio.DatagramTransport, SnmpResponder]):
    """Serve `ups` on host:port (0: any free port; read it from the transport's sockname)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: SnmpResponder(ups, community), local_addr=(host, port))
    return transport, protocol

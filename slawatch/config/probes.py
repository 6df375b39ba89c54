"""Each probe kind's settings (pydantic), and their union: the one list of probe kinds.

A kind is named by its settings class's `kind` literal; the agent runs it with the module agent/probes/<kind>.py.
The first line of a settings class's docstring is the kind's help in `slawatch probe --help`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator

from slawatch.config.units import (
    NAME_PATTERN,
    Finite,
    Interval,
    Milliseconds,
    PacketInterval,
    ReadBytes,
    Strict,
    Timeout,
    check_url,
    count_within,
    shown,
    split_host_port,
    valid_host,
)

SIP_URI = re.compile(r"(sips?):(?:([^@\s]+)@)?(\[[0-9A-Fa-f:.]+\]|[^:;\s\[\]]+)(?::(\d+))?(;[^\s]*)?")
"""`sip:[USER@]HOST[:PORT][;params]` (`sips:` too, HOST may be `[v6]`); groups: scheme, user, host, port, params."""


class ProbeBase(Strict):
    """Settings every probe kind shares; interval/timeout default from the component and `defaults`."""

    kind: str
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    interval_s: Interval = 30.0
    timeout_s: Timeout = 5.0
    retry_interval_s: Interval | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind

    def timing_problems(self) -> list[tuple[str, str]]:
        """(field, message) for each setting that does not fit in `timeout_s`; checked once the component's and
        `defaults`' timing is filled in."""
        return []


StatusAction = Literal["up", "degraded", "down"]


class SipProbe(ProbeBase):
    """SIP OPTIONS or REGISTER."""

    kind: Literal["sip"]
    target: str
    transport: Literal["udp", "tcp", "tls"] = "udp"
    method: Literal["OPTIONS", "REGISTER"] = "OPTIONS"
    username: str | None = None
    password: SecretStr | None = None
    tls_verify: bool = True
    tls_ca: Path | None = None
    # Response-code policy: keys like "503" or "5xx", value up|degraded|down; overrides the defaults
    # (2xx up, 401/407 to OPTIONS up, 503 down, anything else bad_response).
    responses: dict[str, StatusAction] = Field(default_factory=dict)

    @field_validator("target")
    @classmethod
    def _sip_uri(cls, v: str) -> str:
        m = SIP_URI.fullmatch(v)
        if not m:
            raise ValueError(f"bad SIP URI {shown(v)}: write sip:HOST[:PORT] or sip:USER@HOST[:PORT]")
        host = m.group(3).strip("[]")
        if not valid_host(host):
            raise ValueError(f"bad host in SIP URI {shown(v)}")
        if m.group(4) is not None and not 0 < int(m.group(4)) < 65536:
            raise ValueError(f"bad port in SIP URI {shown(v)}: must be 1-65535")
        return v

    @field_validator("responses")
    @classmethod
    def _codes(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.fullmatch(r"[1-6](\d\d|xx)", key):
                raise ValueError(f"bad response code {shown(key)}: write e.g. 503 or 5xx")
        return v

    @model_validator(mode="after")
    def _register_needs_credentials(self) -> SipProbe:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")
        return self


class IcmpProbe(ProbeBase):
    """ICMP echo (ping)."""

    kind: Literal["icmp"]
    target: str
    count: Annotated[int, Field(ge=1, le=100)] = 3
    packet_interval_s: PacketInterval = 0.2
    max_loss_pct: Annotated[float, Field(ge=0, lt=100)] = 50.0  # down above this; degraded on any loss
    max_rtt_ms: Milliseconds | None = None  # degraded above this average

    @field_validator("target")
    @classmethod
    def _host(cls, v: str) -> str:
        if not valid_host(v):
            raise ValueError(f"bad host {shown(v)}")
        return v

    def timing_problems(self) -> list[tuple[str, str]]:
        if (self.count - 1) * self.packet_interval_s >= self.timeout_s:
            return [("count", f"{self.count} packets {self.packet_interval_s:g}s apart do not fit in timeout_s "
                              f"{self.timeout_s:g}")]
        return []


class TcpProbe(ProbeBase):
    """TCP connect, optional TLS and send/expect."""

    kind: Literal["tcp"]
    target: str
    tls: bool = False
    tls_verify: bool = True
    server_name: str | None = None
    send: str | None = None
    expect: str | None = None
    max_read_bytes: ReadBytes = 65536

    @field_validator("target")
    @classmethod
    def _hostport(cls, v: str) -> str:
        split_host_port(v)
        return v

    @field_validator("expect")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        return compiles(v)


def compiles(v: str | None) -> str | None:
    if v is not None:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"bad regular expression {shown(v)}: {exc}") from None
    return v


class JsonCondition(Strict):
    path: str  # dotted: "status" or "checks.0.state"
    equals: str | int | float | bool | None = None
    in_: list[str | int | float | bool] | None = Field(default=None, alias="in")


class HttpProbe(ProbeBase):
    """HTTP(S) request."""

    kind: Literal["http"]
    target: str
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] | None = None  # default: any 2xx
    expect_body: str | None = None
    expect_json: JsonCondition | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    tls_verify: bool = True
    follow_redirects: bool = True
    max_body_bytes: ReadBytes = 1 << 20

    @field_validator("target")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, ("http", "https"))

    @field_validator("expect_body")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        return compiles(v)


class HaproxyProbe(ProbeBase):
    """HAProxy backend from the stats CSV."""

    kind: Literal["haproxy"]
    target: str
    backend: str
    min_up: Annotated[int, count_within(1, 100_000)] = 1
    username: str | None = None
    password: SecretStr | None = None

    @field_validator("target")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v, ("http", "https"))


class SnmpV3(Strict):
    user: str
    auth_protocol: Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"] | None = "SHA"
    auth_key: SecretStr | None = None
    priv_protocol: Literal["DES", "3DES", "AES", "AES192", "AES256"] | None = "AES"
    priv_key: SecretStr | None = None

    @model_validator(mode="after")
    def _keys(self) -> SnmpV3:
        if self.priv_key is not None and self.auth_key is None:
            raise ValueError("priv_key needs auth_key (SNMPv3 has no privacy without authentication)")
        for name in ("auth_key", "priv_key"):
            key = getattr(self, name)
            if key is not None and len(key.get_secret_value()) < 8:
                raise ValueError(f"{name} must be at least 8 characters (RFC 3414)")
        return self


class SnmpAccess(ProbeBase):
    target: str
    version: Literal["1", "2c", "3"] = "2c"
    community: SecretStr = SecretStr("public")
    v3: SnmpV3 | None = None

    @field_validator("target")
    @classmethod
    def _hostport(cls, v: str) -> str:
        split_host_port(v, 161)
        return v

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: object) -> object:
        return str(v) if isinstance(v, int) else v

    @model_validator(mode="after")
    def _v3(self) -> SnmpAccess:
        if self.version == "3" and self.v3 is None:
            raise ValueError("version 3 needs a v3: {user, auth_key, priv_key} block")
        if self.version != "3" and self.v3 is not None:
            raise ValueError(f"a v3 block is set but version is {self.version}")
        return self


class SnmpCheck(Strict):
    oid: str = Field(pattern=r"^\.?\d+(\.\d+)+$")
    label: str | None = None
    equals: str | int | None = None
    in_: list[str | int] | None = Field(default=None, alias="in")
    gt: Finite | None = None
    ge: Finite | None = None
    lt: Finite | None = None
    le: Finite | None = None


class SnmpProbe(SnmpAccess):
    """SNMP GET of OIDs held to conditions."""

    kind: Literal["snmp"]
    checks: list[SnmpCheck] = Field(min_length=1)
    check_reboot: bool = True  # report a sysUpTime that went backwards


class UpsProbe(SnmpAccess):
    """UPS-MIB status over SNMP."""

    kind: Literal["ups"]


DnsType = Literal["A", "AAAA", "SRV", "NAPTR", "TXT"]


class DnsProbe(ProbeBase):
    """DNS query to one server."""

    kind: Literal["dns"]
    target: str  # the server asked, HOST[:PORT] (port 53 by default)
    query: str  # the name to resolve (`name` is every probe's own name)
    type: DnsType = "A"
    expect: str | None = None  # a record the answer must hold, as dig shows it: 127.0.0.7, "10 0 5060 sip.example."

    @field_validator("target")
    @classmethod
    def _hostport(cls, v: str) -> str:
        split_host_port(v, 53)
        return v

    @field_validator("query")
    @classmethod
    def _name(cls, v: str) -> str:
        if not valid_host(v):
            raise ValueError(f"bad DNS name {shown(v)}")
        return v


# The one list of probe kinds: a new kind is one more class here (and its module agent/probes/<kind>.py).
ProbeSettings = Annotated[
    SipProbe | IcmpProbe | TcpProbe | HttpProbe | HaproxyProbe | SnmpProbe | UpsProbe | DnsProbe,
    Field(discriminator="kind"),
]


def _kinds() -> tuple[type[ProbeBase], ...]:
    union = get_args(ProbeSettings)[0]
    return tuple(get_args(union))


PROBE_SETTINGS: tuple[type[ProbeBase], ...] = _kinds()
"""Each kind's settings class, in the union's order."""
PROBE_KINDS: tuple[str, ...] = tuple(get_args(cls.model_fields["kind"].annotation)[0] for cls in PROBE_SETTINGS)
"""The kind names ("sip", "icmp", ...), from each class's `kind` literal."""

"""The configuration and SLA contract models (pydantic), and the probe settings union keyed on `kind`."""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

# For pydantic `pattern=` (whose `$` is the end of the text); Python code uses NAME_RE.fullmatch, because
# Python's `$` also matches before a final newline.
NAME_PATTERN = r"^[A-Za-z0-9_.:-]+$"
NAME_RE = re.compile(r"[A-Za-z0-9_.:-]+")
VALUE_SHOWN = 80  # characters of a bad value repeated in an error message
_DURATION_RE = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?|w|weeks?"
    r"|months?|mo|y|years?)\s*$"
)
_UNIT_S = {
    "ms": 0.001, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    # A contract month is the 720 h basis; a year is 365 days.
    "mo": 2592000, "month": 2592000, "months": 2592000,
    "y": 31536000, "year": 31536000, "years": 31536000,
}


def shown(value: object) -> str:
    """repr() of a bad value for an error message, cut to VALUE_SHOWN characters."""
    text = repr(value)
    return text if len(text) <= VALUE_SHOWN else text[:VALUE_SHOWN - 1] + "…"


def valid_name(value: str) -> bool:
    return NAME_RE.fullmatch(value) is not None


def parse_duration_s(value: object, *, allow_zero: bool = False) -> float:
    """'72h', '15 min', '6 months' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {shown(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ValueError(f"not a duration: {shown(value)} (write e.g. 30s, 15min, 72h, 30d, 6 months)")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"not a duration: {shown(value)}")
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"duration must be {'zero or ' if allow_zero else ''}positive, got {shown(value)}")
    return seconds


def _check_name(what: str, value: str) -> str:
    if not valid_name(value):
        raise ValueError(f"bad {what} name {shown(value)}: use letters, digits and - _ . : only")
    return value


def _span_text(seconds: float) -> str:
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''}"
    return f"{seconds:g} s"


def _within(low: float, high: float, *, low_open: bool = False) -> AfterValidator:
    """Bounds for a number of seconds (or bytes...): a NaN, an infinity or an absurd value never reaches
    the scheduler, where it means a spinning loop or a job that never runs."""
    def check(value: float) -> float:
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            low_text = f"more than {_span_text(low)}" if low_open else _span_text(low)
            raise ValueError(f"must be from {low_text} to {_span_text(high)}, got {value:g}")
        return value
    return AfterValidator(check)


def _count_within(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, got {shown(value)}")
        return value
    return AfterValidator(check)


# Every duration and size in the config is finite and bounded.
Duration = Annotated[float, _within(0, 366 * 86400, low_open=True)]
Notice = Annotated[float, _within(0, 366 * 86400)]  # 0: any announced maintenance counts
Retention = Annotated[float, _within(86400, 100 * 366 * 86400)]
Interval = Annotated[float, _within(0.1, 86400)]
Timeout = Annotated[float, _within(0.001, 3600)]
HeartbeatPeriod = Annotated[float, _within(0.1, 3600)]
ClientTimeout = Annotated[float, _within(0.1, 600)]
PacketInterval = Annotated[float, _within(0.001, 10)]
Milliseconds = Annotated[float, _within(0, 3_600_000, low_open=True)]
ReadBytes = Annotated[int, _count_within(1, 1 << 30)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """'host:port', '[v6]:port', or a bare host when a default port exists."""
    text = value.strip()
    host: str
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad address {shown(value)}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {shown(value)}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        host, port_text = text, None  # a bare IPv6 address
    else:
        host, port_text = text, None
    if not host or not _valid_host(host):
        raise ValueError(f"bad host in {shown(value)}")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{shown(value)} has no port: write host:port")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {shown(value)}: must be 1-65535")
    return host, int(port_text)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return all(re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", label) for label in labels)


def redact_url(url: str) -> str:
    """The URL with any user:password@ replaced by ***@, for messages and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _check_url(value: str, schemes: tuple[str, ...], *, credentials: str = "username and password") -> str:
    shown_url = shown(redact_url(value))
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"bad URL {shown_url}: must start with {' or '.join(s + '://' for s in schemes)}")
    if "@" in parts.netloc:
        # A password in the URL would be printed wherever the URL is (summary, logs, store names).
        raise ValueError(f"bad URL {shown_url}: no user:password@ in the URL, set the {credentials} settings")
    try:
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad URL {shown_url}: {exc}") from None
    if not host or not _valid_host(host):
        raise ValueError(f"bad URL {shown_url}: no valid host")
    if port == 0:
        raise ValueError(f"bad URL {shown_url}: port 0")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------- the contract


ResponseTargets = dict[str, Duration]


class Contract(Strict):
    """The SLA contract the reports are measured against: data, never code."""

    name: str = "contract"
    version: str = "1"
    tiers: list[str] = Field(min_length=1)
    classes: dict[str, dict[str, Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]]] = Field(min_length=1)
    basis: Literal["720h", "period"] = "720h"
    maintenance_notice_s: Notice = Field(default=72 * 3600, alias="maintenance_notice")
    retention_s: Retention = Field(default=180 * 86400, alias="retention")
    unmonitored: Literal["up", "down", "exclude"] = "up"
    quorum: Literal["majority"] | Annotated[int, _count_within(1, 1000)] = "majority"
    decimals: Annotated[int, Field(ge=0, le=6)] = 3
    response_s: dict[str, ResponseTargets] = Field(default_factory=dict, alias="response")

    @field_validator("maintenance_notice_s", mode="before")
    @classmethod
    def _notice(cls, v: object) -> float:
        return parse_duration_s(v, allow_zero=True)

    @field_validator("retention_s", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float:
        return parse_duration_s(v)

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, v: list[str]) -> list[str]:
        for name in v:
            _check_name("tier", name)
        return v

    @field_validator("classes", "response_s")
    @classmethod
    def _key_names(cls, v: dict[str, object], info: ValidationInfo) -> dict[str, object]:
        for name in v:
            _check_name("class" if info.field_name == "classes" else "response priority", name)
        return v

    @field_validator("response_s", mode="before")
    @classmethod
    def _responses(cls, v: object) -> object:
        if isinstance(v, dict):
            return {k: {t: parse_duration_s(d) for t, d in (tiers or {}).items()} for k, tiers in v.items()}
        return v

    @model_validator(mode="after")
    def _every_class_has_every_tier(self) -> Contract:
        for klass, targets in self.classes.items():
            missing = [t for t in self.tiers if t not in targets]
            unknown = [t for t in targets if t not in self.tiers]
            if missing:
                raise ValueError(f"class {shown(klass)} has no target for tier(s) {', '.join(missing)}")
            if unknown:
                raise ValueError(f"class {shown(klass)} names unknown tier(s) {', '.join(unknown)}")
        for priority, tiers in self.response_s.items():
            unknown = [t for t in tiers if t not in self.tiers]
            if unknown:
                raise ValueError(f"response {shown(priority)} names unknown tier(s) {', '.join(unknown)}")
        return self

    def target_pct(self, klass: str, tier: str) -> float:
        return self.classes[klass][tier]


class PolicyOverrides(Strict):
    """Per-customer overrides of the contract's accounting policy."""

    basis: Literal["720h", "period"] | None = None
    unmonitored: Literal["up", "down", "exclude"] | None = None
    maintenance_notice_s: Notice | None = Field(default=None, alias="maintenance_notice")
    quorum: Literal["majority"] | Annotated[int, _count_within(1, 1000)] | None = None
    decimals: Annotated[int, Field(ge=0, le=6)] | None = None

    @field_validator("maintenance_notice_s", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float | None:
        return None if v is None else parse_duration_s(v, allow_zero=True)


# ---------------------------------------------------------------- probes


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


StatusAction = Literal["up", "degraded", "down"]


class SipProbe(ProbeBase):
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
        m = re.fullmatch(r"(sips?):(?:([^@\s]+)@)?(\[[0-9A-Fa-f:.]+\]|[^:;\s\[\]]+)(?::(\d+))?(;[^\s]*)?", v)
        if not m:
            raise ValueError(f"bad SIP URI {shown(v)}: write sip:HOST[:PORT] or sip:USER@HOST[:PORT]")
        host = m.group(3).strip("[]")
        if not _valid_host(host):
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
    kind: Literal["icmp"]
    target: str
    count: Annotated[int, Field(ge=1, le=100)] = 3
    packet_interval_s: PacketInterval = 0.2
    max_loss_pct: Annotated[float, Field(ge=0, lt=100)] = 50.0  # down above this; degraded on any loss
    max_rtt_ms: Milliseconds | None = None  # degraded above this average

    @field_validator("target")
    @classmethod
    def _host(cls, v: str) -> str:
        if not _valid_host(v):
            raise ValueError(f"bad host {shown(v)}")
        return v


class TcpProbe(ProbeBase):
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
        return _compiles(v)


def _compiles(v: str | None) -> str | None:
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
        return _check_url(v, ("http", "https"))

    @field_validator("expect_body")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        return _compiles(v)


class HaproxyProbe(ProbeBase):
    kind: Literal["haproxy"]
    target: str
    backend: str
    min_up: Annotated[int, _count_within(1, 100_000)] = 1
    username: str | None = None
    password: SecretStr | None = None

    @field_validator("target")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, ("http", "https"))


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
    kind: Literal["snmp"]
    checks: list[SnmpCheck] = Field(min_length=1)
    check_reboot: bool = True  # report a sysUpTime that went backwards


class UpsProbe(SnmpAccess):
    kind: Literal["ups"]


ProbeSettings = Annotated[
    SipProbe | IcmpProbe | TcpProbe | HttpProbe | HaproxyProbe | SnmpProbe | UpsProbe,
    Field(discriminator="kind"),
]
PROBE_KINDS = ("sip", "icmp", "tcp", "http", "haproxy", "snmp", "ups")


# ---------------------------------------------------------------- the config file


class Confirm(Strict):
    down: Annotated[int, _count_within(1, 1000)] = 2
    up: Annotated[int, _count_within(1, 1000)] = 1


class Defaults(Strict):
    interval_s: Interval = 30.0
    timeout_s: Timeout = 5.0
    retry_interval_s: Interval | None = None
    confirm: Confirm = Field(default_factory=Confirm)


class AgentSettings(Strict):
    id: str = Field(default_factory=socket.gethostname, pattern=NAME_PATTERN)
    listen: str = "127.0.0.1:9810"
    heartbeat_s: HeartbeatPeriod = 60.0
    concurrency: Annotated[int, _count_within(1, 1_000_000)] = 2000
    # The listener's limits: idle or slow clients must not take the descriptors the probes need.
    max_connections: int = Field(default=64, ge=1, le=10_000)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False)

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        split_host_port(v)
        return v


class SqliteSettings(Strict):
    path: Path = Path("slawatch.db")


class InfluxSettings(Strict):
    url: str
    api: Literal["v1", "v2"] = "v1"
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    org: str | None = None
    bucket: str | None = None
    token: SecretStr | None = None
    timeout_s: ClientTimeout = 10.0
    gzip: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v, ("http", "https"), credentials="username and password (v1) or token (v2)")

    @model_validator(mode="after")
    def _api_fields(self) -> InfluxSettings:
        if self.api == "v1" and not self.database:
            raise ValueError("api v1 needs `database`")
        if self.api == "v2" and not (self.org and self.bucket and self.token):
            raise ValueError("api v2 needs `org`, `bucket` and `token`")
        return self


class SpoolSettings(Strict):
    path: Path = Path("spool")
    max_bytes: ByteSize = ByteSize(1 << 30)
    # /healthz turns unhealthy when a store's backlog has grown this long, or writes have failed this long.
    unhealthy_backlog_s: Annotated[float, Field(ge=1, le=7 * 86400)] = 600.0
    unhealthy_failing_s: Annotated[float, Field(ge=1, le=7 * 86400)] = 60.0

    @field_validator("max_bytes")
    @classmethod
    def _positive(cls, v: ByteSize) -> ByteSize:
        if not 1 << 20 <= v <= 1 << 44:
            raise ValueError(f"max_bytes must be from 1MiB to 16TiB, got {v.human_readable()}")
        return v


class StorageSettings(Strict):
    sqlite: SqliteSettings | None = None
    influxdb: InfluxSettings | None = None
    spool: SpoolSettings = Field(default_factory=SpoolSettings)

    @model_validator(mode="after")
    def _default_sqlite(self) -> StorageSettings:
        if self.sqlite is None and self.influxdb is None:
            self.sqlite = SqliteSettings()
        return self


class Customer(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    tier: str
    report_to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(default_factory=list)
    policy: PolicyOverrides = Field(default_factory=PolicyOverrides)


class Component(Strict):
    name: str
    klass: str = Field(alias="class")
    customer: str | None = None
    tier: str | None = None
    require: Literal["all", "any"] = "all"
    interval_s: Interval | None = None
    timeout_s: Timeout | None = None
    retry_interval_s: Interval | None = None
    confirm: Confirm | None = None
    probes: list[ProbeSettings] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name("component", v)


class SmtpSettings(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 25
    starttls: bool = False
    ssl: bool = False
    from_: str = Field(default="slawatch@localhost", alias="from")
    username: str | None = None
    password: SecretStr | None = None
    # AUTH over a connection that is neither TLS nor STARTTLS sends the password in clear text.
    allow_plaintext_auth: bool = False
    timeout_s: ClientTimeout = 30.0

    @model_validator(mode="after")
    def _auth_needs_tls(self) -> SmtpSettings:
        if (self.username is not None or self.password is not None) and not (
                self.ssl or self.starttls or self.allow_plaintext_auth):
            raise ValueError("SMTP AUTH over an unencrypted connection would send the password in clear text: "
                             "set `starttls: true` or `ssl: true` (or `allow_plaintext_auth: true` for a "
                             "trusted local relay)")
        return self


class ReportSettings(Strict):
    timezone: str = "UTC"
    schedule: str = "0 6 1 * *"
    smtp: SmtpSettings | None = None
    archive: Path | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {shown(v)} (write e.g. UTC or Europe/Paris)") from None
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        if len(v.split()) != 5:
            raise ValueError(f"bad cron schedule {shown(v)}: need 5 fields (minute hour day month weekday)")
        try:
            CronTrigger.from_crontab(v, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"bad cron schedule {shown(v)}: {exc}") from None
        return v


class Config(Strict):
    agent: AgentSettings = Field(default_factory=AgentSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    contract: Path = Path("contract.yaml")
    defaults: Defaults = Field(default_factory=Defaults)
    customers: list[Customer] = Field(default_factory=list)
    components: list[Component] = Field(default_factory=list)
    report: ReportSettings = Field(default_factory=ReportSettings)

    @model_validator(mode="after")
    def _resolve_probe_timing(self) -> Config:
        """Fill each probe's interval/timeout from its component, then `defaults`."""
        for comp in self.components:
            for probe in comp.probes:
                fields = probe.model_fields_set
                if "interval_s" not in fields:
                    probe.interval_s = comp.interval_s or self.defaults.interval_s
                if "timeout_s" not in fields:
                    probe.timeout_s = comp.timeout_s or self.defaults.timeout_s
                if "retry_interval_s" not in fields:
                    probe.retry_interval_s = comp.retry_interval_s or self.defaults.retry_interval_s
        return self

    def customer(self, name: str) -> Customer | None:
        return next((c for c in self.customers if c.name == name), None)

    def tier_of(self, comp: Component) -> str | None:
        if comp.tier is not None:
            return comp.tier
        cust = self.customer(comp.customer) if comp.customer else None
        return cust.tier if cust else None

    def confirm_of(self, comp: Component) -> Confirm:
        return comp.confirm or self.defaults.confirm


def cross_check(config: Config, contract: Contract) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks that need the config and the contract together: (location, message) pairs."""
    errors: list[tuple[tuple[str | int, ...], str]] = []
    tiers = ", ".join(contract.tiers)
    for i, cust in enumerate(config.customers):
        if cust.tier not in contract.tiers:
            errors.append((("customers", i, "tier"), f"unknown tier {shown(cust.tier)} (the contract has {tiers})"))
    seen: dict[str, int] = {}
    for i, comp in enumerate(config.components):
        loc: tuple[str | int, ...] = ("components", i)
        if comp.name in seen:
            errors.append(((*loc, "name"), f"duplicate component name {shown(comp.name)} "
                                             f"(first at components[{seen[comp.name]}])"))
        seen.setdefault(comp.name, i)
        if comp.klass not in contract.classes:
            errors.append(((*loc, "class"), f"unknown class {shown(comp.klass)} "
                                              f"(the contract has {', '.join(contract.classes)})"))
        if comp.customer is not None and config.customer(comp.customer) is None:
            known = ", ".join(c.name for c in config.customers) or "none defined"
            errors.append(((*loc, "customer"), f"unknown customer {shown(comp.customer)} (customers: {known})"))
        if comp.tier is not None and comp.tier not in contract.tiers:
            errors.append(((*loc, "tier"), f"unknown tier {shown(comp.tier)} (the contract has {tiers})"))
        elif comp.tier is None and comp.customer is None:
            errors.append((loc, "no tier: set `tier`, or a `customer` whose tier applies"))
        labels: dict[str, int] = {}
        for j, probe in enumerate(comp.probes):
            ploc = (*loc, "probes", j)
            if probe.timeout_s >= probe.interval_s:
                errors.append(((*ploc, "timeout_s"), f"timeout_s ({probe.timeout_s:g}) must be less than "
                                                      f"interval_s ({probe.interval_s:g})"))
            if isinstance(probe, IcmpProbe) and (probe.count - 1) * probe.packet_interval_s >= probe.timeout_s:
                errors.append(((*ploc, "count"), f"{probe.count} packets {probe.packet_interval_s:g}s apart do not "
                                                 f"fit in timeout_s {probe.timeout_s:g}"))
            if probe.label in labels:
                errors.append((ploc, f"two probes are both named {shown(probe.label)}: give each a distinct `name`"))
            labels.setdefault(probe.label, j)
    return errors


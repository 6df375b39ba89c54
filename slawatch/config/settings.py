"""The configuration and SLA contract models (pydantic); each probe kind's settings are in slawatch.config.probes."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    AfterValidator,
    ByteSize,
    Field,
    PrivateAttr,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from slawatch.config.probes import ProbeSettings
from slawatch.config.response import CalendarSettings, PrioritySettings, ResponseSettings, response_terms
from slawatch.config.terms import ResponseTerms
from slawatch.config.units import (
    NAME_PATTERN,
    ClientTimeout,
    Duration,
    HeartbeatPeriod,
    Interval,
    Notice,
    Retention,
    Strict,
    Timeout,
    parse_duration_s,
)
from slawatch.config.units import check_name as _check_name
from slawatch.config.units import check_timezone as check_timezone
from slawatch.config.units import check_url as _check_url
from slawatch.config.units import count_within as _count_within
from slawatch.config.units import redact_url as redact_url
from slawatch.config.units import shown as shown
from slawatch.config.units import split_host_port as split_host_port

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
    # `response` has two forms: per priority and tier (`urgent: {base: 2h}`, `within` on 24/7), read into
    # response_s, or `targets:` rules with calendars, read into response_rules.
    # (response_rules first: "did you mean" hints for keys under `response` look the alias up in this order.)
    response_rules: ResponseSettings | None = Field(default=None, alias="response")
    response_s: dict[str, ResponseTargets] = Field(default_factory=dict, alias="response")
    calendars: dict[str, CalendarSettings] = Field(default_factory=dict, max_length=100)
    priorities: list[PrioritySettings] | None = Field(default=None, min_length=1, max_length=1000)
    _terms: ResponseTerms | None = PrivateAttr(default=None)

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

    @field_validator("calendars")
    @classmethod
    def _calendar_names(cls, v: dict[str, CalendarSettings]) -> dict[str, CalendarSettings]:
        for name in v:
            if name != "24/7":  # reported with its own message by response_terms
                _check_name("calendar", name)
        return v

    @field_validator("response_s", mode="before")
    @classmethod
    def _responses(cls, v: object) -> object:
        if _is_rules(v):
            return {}
        if isinstance(v, dict):
            return {k: {t: parse_duration_s(d) for t, d in (tiers or {}).items()} for k, tiers in v.items()}
        return v

    @field_validator("response_rules", mode="before")
    @classmethod
    def _rules(cls, v: object) -> object:
        return v if _is_rules(v) else None

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
        self._terms = response_terms(self.tiers, list(self.classes), self.calendars, self.priorities,
                                     self.response_s, self.response_rules)
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, object]:
        # A contract without calendars, priorities or response rules dumps as it did before they existed (a
        # report's inputs hash covers the dump), and `response` holds the form the file was written in.
        data: dict[str, object] = handler(self)
        if not self.calendars:
            data.pop("calendars", None)
        if self.priorities is None:
            data.pop("priorities", None)
        if info.by_alias:
            if self.response_rules is not None:
                data["response"] = self.response_rules.model_dump(mode=info.mode, by_alias=True, exclude_none=True)
        elif self.response_rules is None:
            data.pop("response_rules", None)
        return data

    def response_terms(self) -> ResponseTerms:
        """Calendars, priority rules and response targets, checked, for the response-time engine."""
        if self._terms is None:  # a contract built without validation (model_construct) has none
            raise ValueError("the contract was not validated: load it with Contract.model_validate")
        return self._terms

    def target_pct(self, klass: str, tier: str) -> float:
        return self.classes[klass][tier]


def _is_rules(v: object) -> bool:
    return isinstance(v, dict) and "targets" in v


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
    # Which components this agent watches. static: every component of the config, or with `zone` set, those of
    # its zone and those without one. auto: each component goes to `replicas` of the live agents (of its zone)
    # by rendezvous hashing over the agents' leases in the shared store.
    assign: Literal["static", "auto"] = "static"
    replicas: Annotated[int, _count_within(1, 16)] = 1
    zone: str | None = Field(default=None, pattern=NAME_PATTERN)
    concurrency: Annotated[int, _count_within(1, 1_000_000)] = 2000
    # The listener's limits: idle or slow clients must not take the descriptors the probes need.
    max_connections: int = Field(default=64, ge=1, le=10_000)
    header_timeout_s: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False)
    # The event loop `slawatch agent` runs on; uvloop is the optional extra `slawatch[uvloop]`.
    loop: Literal["asyncio", "uvloop"] = "asyncio"

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


_DSN_SCHEMES = ("postgresql", "postgres")


def _check_dsn(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in _DSN_SCHEMES:
        raise ValueError("bad DSN: must start with postgresql://")
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    # A password in the DSN would be printed wherever the DSN is (summary, logs, errors).
    if ":" in userinfo or "password" in {k.lower() for k, _ in parse_qsl(parts.query)}:
        raise ValueError("bad DSN: no password in the DSN, set `password_env` or `password_file`")
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError as exc:
        raise ValueError(f"bad DSN: {exc}") from None
    if not parts.hostname and "host" not in {k.lower() for k, _ in parse_qsl(parts.query)}:
        raise ValueError("bad DSN: no host")
    if not parts.path.strip("/"):
        raise ValueError("bad DSN: no database name (postgresql://user@host/DATABASE)")
    return value


class PostgresSettings(Strict):
    """The shared store of several monitoring hosts (PostgreSQL, through asyncpg)."""

    dsn: Annotated[str, AfterValidator(_check_dsn)]
    # The password comes from the environment or a file (0600), never from the DSN or the config.
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    password_file: Path | None = None
    pool_max: Annotated[int, _count_within(1, 100)] = 10
    # Connecting; and the longest one statement may run (a month's report of 100 000 components reads millions of
    # rows in one statement; a store that hangs fails a write after this long, and the spool keeps the batch).
    timeout_s: ClientTimeout = 10.0
    statement_timeout_s: Annotated[float, Field(ge=1, le=3600, allow_inf_nan=False)] = 300.0

    @model_validator(mode="after")
    def _one_password_source(self) -> PostgresSettings:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("set `password_env` or `password_file`, not both")
        return self


SinkName = Literal["sqlite", "influxdb", "postgres"]


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
    # The shared store of several hosts: state changes, heartbeats, maintenance windows, the report ledger, the
    # incident desk's records, the console's users and the agents' leases (and samples, unless `samples` says).
    postgres: PostgresSettings | None = None
    # Which of the configured stores take the probe samples (slawatch_probe); the others take only the events
    # (state changes, heartbeats). Default: every configured store.
    samples: list[SinkName] | None = Field(default=None, max_length=3)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    # The incident desk's records (incidents, their logs, the notification outbox) need transactions: a SQLite
    # file, the embedded store's own unless set (InfluxDB cannot keep them).
    records: Path | None = None

    @model_validator(mode="after")
    def _default_sqlite(self) -> StorageSettings:
        if self.sqlite is None and self.influxdb is None and self.postgres is None:
            self.sqlite = SqliteSettings()
        if self.samples is not None:
            missing = [n for n in self.samples if getattr(self, n) is None]
            if missing:
                raise ValueError(f"samples: {', '.join(missing)} is not configured under storage")
        return self

    def takes_samples(self, sink: SinkName) -> bool:
        """Whether the configured store `sink` takes the probe samples."""
        return self.samples is None or sink in self.samples

    @property
    def records_path(self) -> Path:
        if self.records is not None:
            return self.records
        return self.sqlite.path if self.sqlite is not None else SqliteSettings().path


_RECIPIENT = re.compile(r"[^@\s:/]+@[^@\s]+|[A-Za-z][A-Za-z0-9+.-]*://\S+")


def _recipient(value: str) -> str:
    # The value is not repeated in the message: an Apprise URL may hold a token or a password.
    if len(value) > 2048 or not _RECIPIENT.fullmatch(value):
        scheme = value.partition("://")[0] + "://" if "://" in value and len(value) <= 2048 else ""
        raise ValueError(f"not a notification recipient{' (' + scheme + '…)' if scheme else ''}: write an email "
                         "address (noc@example.net) or an Apprise URL without spaces (json://host/path, "
                         "slack://…, mailto://…)")
    return value


Recipient = Annotated[str, AfterValidator(_recipient)]
"""Where a notification goes: an email address (sent by SMTP) or an Apprise URL (json://, slack://, mailto:// ...)."""


class Customer(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    tier: str
    report_to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(default_factory=list)
    # The customer's contacts for incident notifications (open, acknowledged, resolved ...); none: not told.
    notify: list[Recipient] = Field(default_factory=list, max_length=100)
    policy: PolicyOverrides = Field(default_factory=PolicyOverrides)


class Component(Strict):
    name: str
    klass: str = Field(alias="class")
    customer: str | None = None
    tier: str | None = None
    # Only agents of this zone watch it (agents without a zone watch components without one, and all with
    # `assign: static`); none: any agent.
    zone: str | None = Field(default=None, pattern=NAME_PATTERN)
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
        return check_timezone(v, "Europe/Paris")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        from apscheduler.triggers.cron import CronTrigger  # lazy: loads only when a config sets a schedule

        if len(v.split()) != 5:
            raise ValueError(f"bad cron schedule {shown(v)}: need 5 fields (minute hour day month weekday)")
        try:
            CronTrigger.from_crontab(v, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"bad cron schedule {shown(v)}: {exc}") from None
        return v


class EscalationSettings(Strict):
    """Repeats to `to` (and the NOC) while an incident stays unacknowledged."""

    to: list[Recipient] = Field(default_factory=list, max_length=100)
    every_s: Duration | None = Field(default=None, alias="every")
    # Percentages of the response target at which to escalate (50: half the time to the deadline has passed).
    at_target_pct: list[Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]] = Field(
        default_factory=lambda: [50.0, 100.0], max_length=20)
    max: Annotated[int, _count_within(1, 1000)] = 24

    @field_validator("every_s", mode="before")
    @classmethod
    def _every(cls, v: object) -> float | None:
        return None if v is None else parse_duration_s(v)


class NotifySettings(Strict):
    """Incident notifications: who is told, how often, how hard delivery is tried."""

    noc: list[Recipient] = Field(default_factory=list, max_length=100)
    escalation: EscalationSettings = Field(default_factory=EscalationSettings)
    # Base of the link to an incident in the console (default: http://<agent.listen>).
    console_url: str | None = None
    # A component that fails again within this time of its recovery re-opens the same incident.
    reopen_within_s: Duration = Field(default=600.0, alias="reopen_within")
    retry_first_s: Duration = Field(default=10.0, alias="retry_first")
    retry_max_s: Duration = Field(default=1800.0, alias="retry_max")
    give_up_after_s: Duration = Field(default=2 * 86400.0, alias="give_up_after")
    timeout_s: ClientTimeout = 30.0
    concurrency: Annotated[int, _count_within(1, 200)] = 10
    # SMTP for email recipients; default: report.smtp.
    smtp: SmtpSettings | None = None

    @field_validator("reopen_within_s", "retry_first_s", "retry_max_s", "give_up_after_s", mode="before")
    @classmethod
    def _durations(cls, v: object) -> float:
        return parse_duration_s(v)

    @field_validator("console_url")
    @classmethod
    def _console(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, ("http", "https"))


class DeskSettings(Strict):
    """The incident desk: faults become incidents (on by default)."""

    enabled: bool = True
    # How often open incidents are checked for escalation and the outbox for due notifications.
    tick_s: Annotated[float, Field(ge=0.1, le=60, allow_inf_nan=False)] = 1.0


class ConsoleSettings(Strict):
    """The operator console, served on `agent.listen` beside /metrics (on by default; it refuses to serve until a
    user is added with `slawatch user add`)."""

    enabled: bool = True
    # The key that encrypts session cookies: created 0600 on first start; default <storage.spool.path>/console.key.
    secret_file: Path | None = None
    # Secure cookies: "auto" sets the flag when the request came over https.
    secure_cookies: Literal["auto"] | bool = "auto"
    session_max_age_s: Annotated[float, Field(ge=60, le=30 * 86400, allow_inf_nan=False)] = 12 * 3600.0
    # This many wrong passwords for one user, or from one address, lock the login for `login_lock_s`.
    login_attempts: Annotated[int, _count_within(1, 100)] = 5
    login_lock_s: Annotated[float, Field(ge=1, le=86400, allow_inf_nan=False)] = 900.0
    # How often the console reads the current states from the store (and a page polls for them).
    refresh_s: Annotated[float, Field(ge=0.5, le=600, allow_inf_nan=False)] = 5.0
    # How often the month-to-date availability is recomputed in the background.
    figures_s: Annotated[float, Field(ge=5, le=86400, allow_inf_nan=False)] = 60.0
    # The span of the latency sparklines and charts.
    latency_span_s: Annotated[float, Field(ge=60, le=7 * 86400, allow_inf_nan=False)] = 3600.0
    # An unacknowledged incident is "near its deadline" with less than this left.
    near_deadline_s: Annotated[float, Field(ge=0, le=7 * 86400, allow_inf_nan=False)] = 1800.0
    # Customers with a public, read-only status page at /status/NAME (no sign-in): state and month to date only.
    public: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(default_factory=list, max_length=10_000)

    def secret_path(self, storage: StorageSettings) -> Path:
        return self.secret_file if self.secret_file is not None else storage.spool.path / "console.key"


class ServerSettings(Strict):
    """`slawatch server`: the incident desk, notifications, the monthly reports and the console over the shared
    store, apart from the agents. With this section the agents only probe; two servers may run, one leads."""

    listen: str = "127.0.0.1:9820"
    id: str = Field(default_factory=socket.gethostname, pattern=NAME_PATTERN)
    # A leader that stops is replaced within about this long.
    leader_check_s: Annotated[float, Field(ge=0.5, le=60, allow_inf_nan=False)] = 2.0

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        split_host_port(v)
        return v


_TIMING_FIELDS = frozenset(("interval_s", "timeout_s", "retry_interval_s"))


class Config(Strict):
    agent: AgentSettings = Field(default_factory=AgentSettings)
    server: ServerSettings | None = None
    storage: StorageSettings = Field(default_factory=StorageSettings)
    contract: Path = Path("contract.yaml")
    defaults: Defaults = Field(default_factory=Defaults)
    customers: list[Customer] = Field(default_factory=list)
    components: list[Component] = Field(default_factory=list)
    report: ReportSettings = Field(default_factory=ReportSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    desk: DeskSettings = Field(default_factory=DeskSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    # Customers by name, for the list it was built from (its id and length): cross_check and each component's
    # tier look a customer up, and a scan of 1 000 customers for each of 100 000 components takes minutes.
    _customer_index: tuple[int, int, dict[str, Customer]] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve_probe_timing(self) -> Config:
        """Fill each probe's interval/timeout from its component, then `defaults`."""
        defaults = self.defaults
        for comp in self.components:
            for probe in comp.probes:
                # What pydantic's __setattr__ does for a plain field (the value in __dict__, the name in the set
                # fields), without its per-call dispatch: 300 000 assignments for 100 000 probes.
                values, fields = probe.__dict__, probe.__pydantic_fields_set__
                if fields >= _TIMING_FIELDS:
                    continue
                if "interval_s" not in fields:
                    values["interval_s"] = comp.interval_s or defaults.interval_s
                if "timeout_s" not in fields:
                    values["timeout_s"] = comp.timeout_s or defaults.timeout_s
                if "retry_interval_s" not in fields:
                    values["retry_interval_s"] = comp.retry_interval_s or defaults.retry_interval_s
                # One new set with the three names rather than three adds: a set grown past four names is
                # resized to 728 bytes, one made at once takes 472 (25 MB for 100 000 probes).
                object.__setattr__(probe, "__pydantic_fields_set__", fields | _TIMING_FIELDS)
        return self

    def customer(self, name: str) -> Customer | None:
        # The private attribute read from pydantic's own dict: `self._customer_index` goes through its __getattr__,
        # which costs more than the lookup (the agent asks once per component at each start and reload).
        private = self.__pydantic_private__
        index = private.get("_customer_index") if private is not None else None
        if index is None or index[0] != id(self.customers) or index[1] != len(self.customers):
            by_name: dict[str, Customer] = {}
            for cust in self.customers:
                by_name.setdefault(cust.name, cust)  # the first of a name, as a scan finds it
            index = self._customer_index = (id(self.customers), len(self.customers), by_name)
        found = index[2].get(name)
        if found is not None and found.name == name:
            return found
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
    customers: dict[str, Customer] = {}
    for cust in config.customers:
        customers.setdefault(cust.name, cust)
    for i, name in enumerate(config.console.public):
        if name not in customers:
            known = ", ".join(c.name for c in config.customers) or "none defined"
            errors.append((("console", "public", i), f"unknown customer {shown(name)} (customers: {known})"))
    seen: dict[str, int] = {}
    classes, tier_names = contract.classes, set(contract.tiers)
    # Locations are built only for an error: this loop runs once per component of a config of 100 000.
    for i, comp in enumerate(config.components):
        if seen.setdefault(comp.name, i) != i:
            errors.append((("components", i, "name"), f"duplicate component name {shown(comp.name)} "
                                                     f"(first at components[{seen[comp.name]}])"))
        if comp.klass not in classes:
            errors.append((("components", i, "class"), f"unknown class {shown(comp.klass)} "
                                                      f"(the contract has {', '.join(classes)})"))
        if comp.customer is not None and comp.customer not in customers:
            known = ", ".join(c.name for c in config.customers) or "none defined"
            errors.append((("components", i, "customer"), f"unknown customer {shown(comp.customer)} "
                                                         f"(customers: {known})"))
        if comp.tier is not None and comp.tier not in tier_names:
            errors.append((("components", i, "tier"), f"unknown tier {shown(comp.tier)} (the contract has {tiers})"))
        elif comp.tier is None and comp.customer is None:
            errors.append((("components", i), "no tier: set `tier`, or a `customer` whose tier applies"))
        labels: dict[str, int] = {}
        for j, probe in enumerate(comp.probes):
            if probe.timeout_s >= probe.interval_s:
                errors.append((("components", i, "probes", j, "timeout_s"),
                               f"timeout_s ({probe.timeout_s:g}) must be less than interval_s "
                               f"({probe.interval_s:g})"))
            timing = probe.timing_problems()
            if timing:
                errors.extend((("components", i, "probes", j, field), message) for field, message in timing)
            label = probe.name or probe.kind
            if labels.setdefault(label, j) != j:
                errors.append((("components", i, "probes", j),
                               f"two probes are both named {shown(label)}: give each a distinct `name`"))
    return errors


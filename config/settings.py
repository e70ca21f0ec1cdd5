"""Load and validate gridpay's configuration.

One TOML file; every value can be overridden by an environment variable named
``GRIDPAY_<KEY>__<KEY>...`` (double underscore between levels, list items by index),
e.g. ``GRIDPAY_DATABASE__URL`` or ``GRIDPAY_BANKS__01020000__MAX_CONNECTIONS``.
Secrets (ZMKs, database passwords) are never read from the file itself: the file names
an environment variable (``*_env``) or a file path (``*_file``) that holds them.
"""
from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping, get_origin

from pydantic import (
    BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator,
)

from config import notices
from config.clock import DEFAULT_CUTOFF, DEFAULT_TIMEZONE
from config.errors import ConfigError

ENV_PREFIX = "GRIDPAY_"
CONFIG_ENV = "GRIDPAY_CONFIG"
SECRET_KEYS = ("zmk", "password", "mak", "secret")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in SECRET_KEYS:
                    raise ValueError(
                        f"'{key}' may not be written in the config; name its source "
                        f"with '{key}_env' (environment variable) or '{key}_file' (path)")
        return data


class DatabaseConfig(_Model):
    url: str = "sqlite:///var/gridpay.db"
    replica_url: str = ""
    password_env: str = ""
    password_file: str = ""
    pool_size: int = Field(10, ge=1, le=200)
    group_commit_max: int = Field(256, ge=1, le=10_000)
    group_commit_wait_ms: float = Field(1.0, ge=0, le=1000)
    statement_timeout_s: float = Field(5.0, gt=0)

    @field_validator("url", "replica_url")
    @classmethod
    def _url_has_no_password(cls, url: str, info: ValidationInfo) -> str:
        from sqlalchemy.engine import make_url

        if not url and info.field_name == "replica_url":
            return url
        try:
            parsed = make_url(url)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several kinds
            raise ValueError(f"not a database URL: {exc}") from None
        if parsed.password and not os.environ.get(f"GRIDPAY_DATABASE__{info.field_name.upper()}"):
            raise ValueError("the URL holds a password; use password_env or password_file")
        return url

    @model_validator(mode="after")
    def _replica_of_postgresql(self) -> "DatabaseConfig":
        from sqlalchemy.engine import make_url

        if not self.replica_url:
            return self
        backends = {make_url(u).get_backend_name() for u in (self.url, self.replica_url)}
        if backends != {"postgresql"}:
            raise ValueError("replica_url: a read replica is a PostgreSQL hot standby of a PostgreSQL url "
                             f"(here: {' and '.join(sorted(backends))}); SQLite has no replicas: remove replica_url")
        return self


class BusinessConfig(_Model):
    timezone: str = DEFAULT_TIMEZONE
    cutoff: str = Field(DEFAULT_CUTOFF, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    refund_approval_resident_fen: int = Field(100_000, ge=0)
    refund_approval_nonresident_fen: int = Field(1_000_000, ge=0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name


class DebitLinkConfig(_Model):
    mode: Literal["online", "file"] = "online"
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    connections: int = Field(1, ge=1, le=64)
    timeout_s: float = Field(30.0, gt=0)
    reversal_interval_s: float = Field(60.0, gt=0)
    reversal_max: int = Field(5, ge=1)
    max_in_flight: int = Field(256, ge=1)
    max_per_second: float = Field(2000.0, gt=0)
    echo_interval_s: float = Field(60.0, gt=0)
    result_deadline_h: float = Field(24.0, gt=0)


class BankConfig(_Model):
    name: str = ""
    name_en: str = ""
    dialect: str = "ascii"
    framing: str | None = None
    fields: str | None = None
    mac: str | None = None
    nii_gateway: str = Field("0000", pattern=r"^\d{4}$")
    nii_bank: str = Field("0001", pattern=r"^\d{4}$")
    zmk_env: str = ""
    zmk_file: str = ""
    channels: list[Literal["counter", "debit"]] = ["counter"]
    max_connections: int = Field(16, ge=1, le=10_000)
    idle_timeout_s: float = Field(300.0, gt=0)
    frame_timeout_s: float = Field(10.0, gt=0)
    request_timeout_s: float = Field(10.0, gt=0)
    max_frame: int = Field(4096, ge=64, le=65535)
    max_outstanding_requests: int = Field(
        64, ge=1, le=10_000,
        description="Most requests one counter connection of the bank may have in the gateway at once: at the "
                    "cap the gateway stops reading from that connection and reads on as answers go out, so one "
                    "connection's flood cannot crowd out the bank's other connections or other banks.")
    allowed_networks: list[str] = ["127.0.0.0/8", "::1/128"]
    client_cert_subject: str = ""
    debit: DebitLinkConfig = DebitLinkConfig()

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, nets: list[str]) -> list[str]:
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"not a network: {net!r}") from None
        return nets

    @model_validator(mode="after")
    def _one_zmk_source(self) -> "BankConfig":
        if self.zmk_env and self.zmk_file:
            raise ValueError("give zmk_env or zmk_file, not both")
        return self


class ListenerConfig(_Model):
    name: str = "counter"
    host: str = "127.0.0.1"
    port: int = Field(..., ge=0, le=65535)
    dialect: str = "ascii"
    banks: list[str] = []
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    tls_handshake_timeout_s: float = Field(
        10.0, gt=0,
        description="On a TLS listener: a connection whose TLS handshake (and client certificate check) has not "
                    "finished within this time is closed. Until then it counts against no bank's "
                    "`max_connections`.")


class GatewayConfig(_Model):
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535)
    echo_interval_s: float = Field(60.0, gt=0)
    key_grace_s: float = Field(60.0, ge=0)
    drain_timeout_s: float = Field(15.0, gt=0)
    log_file: str = ""
    watch_drop_dir: bool = False
    listeners: list[ListenerConfig] = []


class PlatformTemplate(_Model):
    """A notice kind's template on the SMS platform: its code and its parameters."""
    code: str = Field(min_length=1, max_length=64, description="The platform's template code (e.g. `SMS_15305****`).")
    params: dict[str, str] = Field({}, description="The template's parameters: name -> value, where the value may "
                                   "hold the notice's placeholders ({customer_no} {mobile} {text} {ref} {id} {kind}) "
                                   "and the values its wording stores with it ({amount} {periods} {due_date} "
                                   "{customer_masked} ...: docs/notifier.md).")


class AliyunSmsConfig(_Model):
    """The Alibaba Cloud SMS sender (`sender = "aliyun"`): SendSms with the RPC signature (docs/notifier.md)."""
    endpoint: str = Field("https://dysmsapi.aliyuncs.com/", description="SendSms endpoint.")
    access_key_id: str = Field("", max_length=128, description="The AccessKey ID (not a secret).")
    access_key_secret_env: str = Field("", description="Environment variable holding the AccessKey secret.")
    access_key_secret_file: str = Field("", description="File holding the AccessKey secret instead (for the "
                                        "service's user alone; see `key_file_permissions`).")
    sign_name: str = Field("", max_length=64, description="The approved signature name (SignName), e.g. `广州供电局`.")
    region_id: str = Field("cn-hangzhou", description="RegionId sent with each request.")
    rate_per_s: float = Field(50.0, gt=0, le=5000, description="Requests per second to the platform, for all "
                              "send threads of one notifier together (a token bucket); the platform allows 5000.")
    templates: dict[str, PlatformTemplate] = Field({}, description="Per notice kind (`bill_notice`, `payment`, "
                                                   "`reversal`, `debit_ok`, `debit_failed`, `reminder`) or wording "
                                                   "(`bill_cash`, `bill_bank`, `bill_debit`, `bill_paid_from_prepaid`, "
                                                   "`payment_to_prepaid`; used before its kind's): the platform "
                                                   "template and its parameters. A notice with neither is dead "
                                                   "(`no_template`).")

    def check(self) -> None:
        from config.sms_request import check_platform_params

        if not (self.access_key_id and self.sign_name and self.templates):
            raise ValueError("sender = aliyun needs aliyun.access_key_id, aliyun.sign_name and aliyun.templates")
        if bool(self.access_key_secret_env) == bool(self.access_key_secret_file):
            raise ValueError("sender = aliyun needs aliyun.access_key_secret_env or aliyun.access_key_secret_file "
                             "(one of them)")
        for kind, template in self.templates.items():
            check_platform_params(kind, template.params, f"aliyun.templates.{kind}", self.templates)


class NotifierConfig(_Model):
    """``gridpay notifier``: sends the outbox's SMS notices, each at most once (docs/notifier.md)."""
    sender: Literal["file", "http", "aliyun"] = Field(
        "file", description="Where notices go: `http` (an SMS gateway), `aliyun` (Alibaba Cloud SMS, see "
        "`[notifier.aliyun]`) or `file` (one JSON line per notice, for tests and demos; the default, so a "
        "development machine never sends real SMS).")
    file_path: str = Field("var/sms-outbox.jsonl", description="The file sender's file.")
    http_url: str = Field("", description="The SMS gateway's URL (required for `sender = http`); may hold "
                          "placeholders {mobile} {text} {ref} {id} {kind} {customer_no}, URL-quoted.")
    http_method: Literal["POST", "PUT", "GET"] = Field(
        "POST", description="HTTP method; with GET the form template goes into the query.")
    http_body_format: Literal["json", "form"] = Field(
        "json", description="`json`: `http_body` is a JSON document whose strings hold placeholders; "
        "`form`: `http_body` is `a={mobile}&b={text}`, form-encoded (UTF-8).")
    http_body: str = Field('{"mobile": "{mobile}", "text": "{text}", "ref": "{ref}"}',
                           description="The request body's template (see `http_body_format`).")
    http_headers: dict[str, str] = Field({}, description="Extra request headers (values may hold placeholders).")
    http_secret_header: str = Field("", description="A header whose value holds a secret (e.g. `Authorization`); "
                                    "the secret comes from `secret_env` or `secret_file`.")
    http_secret_format: str = Field("{secret}", description="That header's value, e.g. `Bearer {secret}`.")
    secret_env: str = Field("", description="Environment variable holding the gateway secret.")
    secret_file: str = Field("", description="File holding the SMS gateway's secret; for the service's user alone "
                             "(0600; see `key_file_permissions`).")
    http_timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout for connecting and for each read "
                                  "of the answer.")
    http_success_field: str = Field("", description="Optional: a 2xx answer must be JSON whose field at this "
                                    "dotted path (e.g. `result.code`) equals `http_success_value`; else the "
                                    "notice is dead (rejected).")
    http_success_value: str = Field("", description="The value `http_success_field` must have.")
    http_ca_file: str = Field("", description="CA bundle for an https gateway (default: the system's).")
    http_retry_unknown: bool = Field(False, description="Retry a request that got no answer (timeout, "
                                     "connection lost) instead of making it dead: at least once instead of "
                                     "at most once.")
    batch_size: int = Field(50, ge=1, le=10_000, description="Notices claimed per batch.")
    concurrency: int = Field(4, ge=1, le=64, description="Sends in parallel within a batch.")
    poll_interval_s: float = Field(2.0, gt=0, le=3600, description="Wait after a batch that was not full.")
    max_attempts: int = Field(8, ge=1, le=1000, description="Attempts before a notice is dead.")
    backoff_base_s: float = Field(30.0, ge=0, description="First retry delay; doubled after each failure.")
    backoff_max_s: float = Field(3600.0, ge=0, description="Longest retry delay (also caps Retry-After).")
    backoff_jitter: float = Field(0.2, ge=0, le=1, description="Each delay is cut by up to this fraction "
                                  "at random.")
    lease_s: float = Field(300.0, gt=0, description="A notice still `sending` this long after its claim "
                           "is swept: never begun -> pending, in flight -> dead (outcome unknown). "
                           "At least 3 x `http_timeout_s`.")
    sweep_interval_s: float = Field(15.0, gt=0, description="How often the sweep runs and the backlog "
                                    "gauges are refreshed.")
    name: str = Field("", max_length=40, description="`claimed_by` prefix (default: the host name); "
                      "`:pid` is appended.")
    metrics_host: str = Field("127.0.0.1", description="Address of the notifier's /metrics, /healthz, /readyz.")
    metrics_port: int = Field(9109, ge=0, le=65535, description="Port of the notifier's /metrics, /healthz, "
                              "/readyz; 0 = any free port (printed at start).")
    log_file: str = Field("", description="Log to this file (default: stderr).")
    aliyun: AliyunSmsConfig = Field(AliyunSmsConfig(), description="The Alibaba Cloud SMS sender; see "
                                    "`[notifier.aliyun]`.")

    @model_validator(mode="after")
    def _consistent(self) -> "NotifierConfig":
        if self.sender == "aliyun":
            self.aliyun.check()
        if self.sender == "http":
            from config.sms_request import http_request

            if not self.http_url:
                raise ValueError("sender = http needs http_url")
            http_request(self.http_url, self.http_body, self.http_method, self.http_body_format)
        if self.http_secret_header and not (self.secret_env or self.secret_file):
            raise ValueError("http_secret_header needs secret_env or secret_file")
        if self.secret_env and self.secret_file:
            raise ValueError("give secret_env or secret_file, not both")
        if self.lease_s < 3 * self.http_timeout_s:
            raise ValueError("lease_s must be at least 3 x http_timeout_s")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must not be below backoff_base_s")
        return self


class RemindersConfig(_Model):
    """Overdue reminders (docs/notifier.md): who is reminded, when, and how often."""
    enabled: bool = Field(False, description="`gridpay notifier` runs the reminders job every `interval_s` "
                          "(`gridpay notifier remind` runs it once, whatever this says).")
    days_after_due: list[int] = Field([3, 10], min_length=1, max_length=12, description="Days after a bill's "
                                      "due date on which its customer is reminded (local dates).")
    catch_up_days: int = Field(3, ge=0, le=60, description="A reminder day the job missed (it did not run, or it "
                               "was quiet) is still reminded this many days later; older ones are not.")
    min_interval_days: int = Field(7, ge=1, le=365, description="At most one reminder per customer in this "
                                   "many days.")
    quiet_from: str = Field("21:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Quiet hours begin "
                            "(local time): no reminder is enqueued or sent from then ...")
    quiet_until: str = Field("08:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="... until this local "
                             "time (reminders wait; other notices are sent as ever).")
    interval_s: float = Field(600.0, ge=10, le=86_400, description="How often `gridpay notifier` runs the job.")
    batch_size: int = Field(2000, ge=1, le=50_000, description="Customers read and reminders inserted per "
                            "transaction.")

    @field_validator("days_after_due")
    @classmethod
    def _days(cls, days: list[int]) -> list[int]:
        if any(d < 1 or d > 366 for d in days) or len(set(days)) != len(days):
            raise ValueError("distinct days from 1 to 366")
        return sorted(days)


class EnginesConfig(_Model):
    """``gridpay engine``: the debit engines (docs/debit-engines.md)."""
    metrics_host: str = Field("127.0.0.1", description="Address of each engine's /metrics, /healthz, /readyz.")
    metrics_port_base: int = Field(9120, ge=0, le=65535, description="Engine number N (`gridpay engine "
                                   "--instance N`, as the systemd template `gridpay-engine@N` starts it) serves "
                                   "its operations port on this port + N; 0: any free port (printed at start).")
    database_nice: int = Field(0, ge=0, le=19, description="Niceness (1-19) of the engines' database sessions' "
                               "server processes, where the database has the `prioritize` extension: on a database "
                               "whose cores the counter shares, the batch's statements yield to the payments'. "
                               "0: the database's default.")


class SchedulerConfig(_Model):
    """``gridpay scheduler``: turns due debit plans into batches."""
    interval_s: float = Field(30.0, gt=0, le=3600, description="Seconds between passes over the plans.")
    metrics_host: str = Field("127.0.0.1", description="Address of the scheduler's /metrics, /healthz, /readyz.")
    metrics_port: int = Field(9112, ge=0, le=65535, description="Port of the scheduler's /metrics, /healthz, "
                              "/readyz; 0: any free port (printed at start).")


class WatchConfig(_Model):
    """``gridpay watch``: the drop directory's watcher (docs/reconciliation.md)."""
    interval_s: float = Field(5.0, gt=0, le=3600, description="Seconds between looks at `drop_dir`.")
    max_file_mib: int = Field(256, ge=1, le=65536, description="Largest file taken from `drop_dir`, in MiB; a larger "
                              "one is refused with a report before it is read (also for the gateway's own watcher).")
    hold_bank_files_until_day_ended: bool = Field(True, description="A bank's day file (`{bank}_{YYYYMMDD}.txt`) "
                                                  "waits in `incoming/` until its business date has ended on the "
                                                  "clock (the cut-off), then is reconciled; false: reconciled when "
                                                  "it arrives (also for the gateway's own watcher).")
    metrics_host: str = Field("127.0.0.1", description="Address of the watcher's /metrics, /healthz, /readyz.")
    metrics_port: int = Field(9111, ge=0, le=65535, description="Port of the watcher's /metrics, /healthz, "
                              "/readyz; 0: any free port (printed at start).")


class CollectionRateConfig(_Model):
    """``gridpay collection-rate``: the billing period's collection rate (collected / billed) as
    Prometheus gauges, by district and channel, and the alert's threshold (docs/runbook.md)."""
    target: float = Field(0.95, gt=0, le=1, description="The collection rate expected of the billing period "
                          "(0.95: 95 % of the money billed collected); below it, from `alert_from_day` on, "
                          "GridpayCollectionRateBelowTarget fires.")
    alert_from_day: int = Field(25, ge=1, le=28, description="Day of the month (of the business date) from which "
                                "a rate below `target` alerts; earlier in the month the period is still being paid. "
                                "At most 28, so that every month reaches it.")
    months_back: int = Field(0, ge=0, le=12, description="The billing period watched: the business date's month "
                             "less this many months (1 where bills of a month are issued in the next).")
    refresh_s: float = Field(60.0, ge=60, le=3600, description="Seconds between reads of the figures from the "
                             "database; scrapes in between get the last figures.")
    metrics_host: str = Field("127.0.0.1", description="Address of the exporter's /metrics.")
    metrics_port: int = Field(9113, ge=0, le=65535, description="Port of the exporter's /metrics; 0: any free port "
                              "(printed at start).")


class ApiConfig(_Model):
    """``gridpay api``: the operations HTTP API (docs/api.md). One worker per process: run two or
    more processes (``gridpay-api@N``) behind HAProxy to scale."""
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8180, ge=0, le=65535, description="Port of the API (also its /metrics, /healthz, /readyz). "
                      "`gridpay api --instance N` (the systemd template `gridpay-api@N`) listens on this port + N; "
                      "0: any free port (printed at start).")
    tls_cert_file: str = Field("", description="PEM certificate chain: with `tls_key_file`, the API speaks HTTPS "
                               "only (without both, plain HTTP, e.g. behind a TLS-terminating HAProxy on the "
                               "same host).")
    tls_key_file: str = Field("", description="PEM private key of `tls_cert_file` (for the service's user alone).")
    idempotency_hours: float = Field(24.0, gt=0, le=720, description="How long an `Idempotency-Key` is kept: "
                                     "a retry within this time replays the first answer; after it the key "
                                     "may be used afresh.")
    page_limit_max: int = Field(200, ge=1, le=10_000, description="Largest `limit` of a page of any list "
                                "(a larger one is cut to it).")
    page_limit_default: int = Field(50, ge=1, le=10_000, description="Items per page when `limit` is not given.")
    login_attempts_per_minute: int = Field(10, ge=1, le=10_000, description="Failed log-ins from one client "
                                           "address within a minute (per process) after which its log-ins are "
                                           "refused with 429, before any password is checked, until the minute "
                                           "has passed (the account lock-out of `[access]` protects each account "
                                           "besides).")
    trusted_proxies: list[str] = Field(["127.0.0.1"], description="Addresses of proxies (HAProxy) whose "
                                       "`X-Forwarded-For` names the client: its address is what log-in "
                                       "throttling and the audit log see.")
    graceful_timeout_s: float = Field(10.0, gt=0, le=600, description="After SIGTERM, how long requests in "
                                      "hand may take before the process exits anyway.")
    single_debit_wait_max_s: float = Field(30.0, ge=0, le=300, description="Longest `wait_s` of "
                                           "`POST /v1/debits`: how long a request may wait for the bank's answer "
                                           "to a single debit (a longer one is cut to it; the client polls "
                                           "`GET /v1/debits/{id}` after).")
    log_file: str = Field("", description="Log to this file (default: stderr).")

    @model_validator(mode="after")
    def _tls_pair(self) -> "ApiConfig":
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        if self.page_limit_default > self.page_limit_max:
            raise ValueError("page_limit_default must not exceed page_limit_max")
        return self


def _check_template(cls, text: str, info: ValidationInfo) -> str:
    problem = notices.template_problem(info.field_name, text)
    if problem:
        raise ValueError(problem)
    return text


class AccessConfig(_Model):
    """Who may use the operations API and the back-office commands: operators' log-ins, lock-out,
    sessions, password hashing and API keys (docs/access.md)."""
    max_failed_logins: int = Field(5, ge=1, le=100, description="Failed log-ins in a row (wrong password or "
                                   "TOTP code) after which an operator's account is locked.")
    lockout_minutes: float = Field(15.0, gt=0, le=10_080, description="How long a locked account refuses every "
                                   "log-in, the right password included; `gridpay principal reset` unlocks it "
                                   "at once.")
    session_idle_minutes: float = Field(30.0, gt=0, le=1440, description="A session not used for this long "
                                        "expires (each use moves its last-seen time).")
    session_lifetime_hours: float = Field(12.0, gt=0, le=720, description="A session expires this long after "
                                          "its log-in, however often it is used.")
    password_min_length: int = Field(12, ge=8, le=128, description="Shortest password an operator may be given "
                                     "(the other rules: not the user name, at least 3 kinds of characters).")
    argon2_time_cost: int = Field(3, ge=1, le=20, description="Argon2id passes over memory per password hash. "
                                  "A stored hash made with other Argon2 parameters is rehashed at the next "
                                  "successful log-in.")
    argon2_memory_kib: int = Field(65_536, ge=8, le=4_194_304, description="Argon2id memory per password hash, "
                                   "in KiB (the default, 64 MiB, is RFC 9106's second recommended setting).")
    argon2_parallelism: int = Field(4, ge=1, le=64, description="Argon2id lanes per password hash.")
    totp_issuer: str = Field("gridpay", min_length=1, max_length=40, description="Issuer shown by authenticator "
                             "apps for the TOTP secrets `gridpay principal add/reset --totp` enrol.")
    api_key_max_days: int = Field(400, ge=1, le=3660, description="Longest validity of a client's API key "
                                  "(`--expires` further out is refused).")
    totp_key_env: str = Field("", description="Environment variable holding the key (64 hex digits: AES-256) "
                              "that encrypts operators' TOTP secrets in the database. Without `totp_key_env` or "
                              "`totp_key_file`, secrets are stored as enrolled (never printed or logged after "
                              "enrolment); secrets enrolled while a key was set need it to log in.")
    totp_key_file: str = Field("", description="File holding that key instead (for the service's user alone: "
                               "0600 or 0400; a more open file is refused).")

    @model_validator(mode="after")
    def _consistent(self) -> "AccessConfig":
        if self.totp_key_env and self.totp_key_file:
            raise ValueError("give totp_key_env or totp_key_file, not both")
        if self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_kib must be at least 8 × argon2_parallelism (Argon2's own rule)")
        return self

    def totp_key(self) -> bytes | None:
        """The TOTP secrets' encryption key, or None when none is configured."""
        if not (self.totp_key_env or self.totp_key_file):
            return None
        value = read_secret("access.totp_key", self.totp_key_env, self.totp_key_file, permissions="refuse")
        try:
            key = bytes.fromhex(value)
        except ValueError:
            raise ConfigError("access.totp_key", "not hexadecimal") from None
        if len(key) != 32:
            raise ConfigError("access.totp_key", f"must be 32 bytes (64 hex), got {len(key)}")
        return key


# One key per template of config.notices.TEMPLATES, its built-in text the default.
NoticeTemplatesConfig = create_model(
    "NoticeTemplatesConfig", __base__=_Model, __doc__="The notices' templates (config/notices.py).",
    __validators__={"_template": field_validator("*")(_check_template)},
    **{name: (str, Field(t.text, description=f"{t.description} Placeholders: "
                         f"{', '.join('`{' + p + '}`' for p in t.placeholders)}."))
       for name, t in notices.TEMPLATES.items()})


class NoticesConfig(_Model):
    """The SMS notices' wording: every template of config/notices.py and the signature (docs/notifier.md)."""
    signature: str = Field("", max_length=notices.MAX_SIGNATURE, description=(
        "Text put in place of `{signature}`, which ends every built-in template, e.g. `【广州供电局】` "
        "(empty: none)."))
    templates: NoticeTemplatesConfig = Field(NoticeTemplatesConfig(), description=(
        "The notices' texts, one key per notice, each a template whose placeholders (`{name}`) are those "
        "listed for it; a site sets the ones it words differently."))

    @field_validator("signature")
    @classmethod
    def _plain_signature(cls, signature: str) -> str:
        if notices.CONTROL.search(signature):
            raise ValueError("contains a control character")
        return signature


class ArchiveConfig(_Model):
    """``gridpay ledger archive``: months older than the retention period leave the database for
    archive files, their totals carried forward as openings (docs/runbook.md, "Archiving old months")."""
    retention_months: int = Field(84, ge=1, description="Months kept in the database: `gridpay ledger archive` "
                                  "without `--before` archives the months before this business month less this many "
                                  "(84: 7 years), and refuses a `--before` newer than that.")
    directory: str = Field("var/archive", min_length=1, description="Where archived months' files go, one directory "
                           "per month (gzip JSON lines per table and a manifest with row counts and SHA-256); keep it "
                           "outside the installation, on storage that is backed up.")


DEFAULT_DATABASE_URL = DatabaseConfig().url


class Settings(_Model):
    database: DatabaseConfig = DatabaseConfig()
    business: BusinessConfig = BusinessConfig()
    gateway: GatewayConfig = GatewayConfig()
    notifier: NotifierConfig = NotifierConfig()
    engines: EnginesConfig = EnginesConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    watch: WatchConfig = WatchConfig()
    notices: NoticesConfig = NoticesConfig()
    reminders: RemindersConfig = RemindersConfig()
    access: AccessConfig = AccessConfig()
    api: ApiConfig = ApiConfig()
    collection_rate: CollectionRateConfig = CollectionRateConfig()
    archive: ArchiveConfig = ArchiveConfig()
    banks: dict[str, BankConfig] = {}
    drop_dir: str = "var/drop"
    reports_dir: str = "var/reports"
    key_file_permissions: Literal["refuse", "warn"] = "refuse"
    source: str = ""
    database_chosen: bool = True

    @field_validator("banks")
    @classmethod
    def _bank_codes(cls, banks: dict[str, BankConfig]) -> dict[str, BankConfig]:
        for code in banks:
            if not (code.isdigit() and 1 <= len(code) <= 11):
                raise ValueError(f"bank code {code!r} must be 1 to 11 digits")
        return banks

    def bank(self, code: str) -> BankConfig:
        try:
            return self.banks[code]
        except KeyError:
            raise ConfigError(f"banks.{code}", "no such bank in the configuration") from None

    def zmk(self, code: str) -> bytes:
        bank = self.bank(code)
        value = read_secret(f"banks.{code}.zmk", bank.zmk_env, bank.zmk_file,
                            permissions=self.key_file_permissions)
        try:
            key = bytes.fromhex(value)
        except ValueError:
            raise ConfigError(f"banks.{code}.zmk", "not hexadecimal") from None
        if len(key) != 16:
            raise ConfigError(f"banks.{code}.zmk", f"must be 16 bytes (32 hex), got {len(key)}")
        return key

    def database_url(self) -> str:
        from sqlalchemy.engine import make_url

        db = self.database
        if not self.database_chosen:
            where = make_url(db.url).database or ""
            raise ConfigError("database.url", (
                f"no configuration names a database (without one, gridpay would use {db.url}, i.e. "
                f"{Path(where).resolve()}); choose one with --config FILE, GRIDPAY_CONFIG=FILE or "
                f"GRIDPAY_DATABASE__URL=URL (or --url where the command has it)"))
        return self._with_password(db.url)

    def replica_url(self) -> str | None:
        """The read replica's URL with the database password (``database.replica_url``), or None: no
        replica, every read goes to ``database_url()``."""
        self.database_url()          # the same refusal when no configuration names a database
        return self._with_password(self.database.replica_url) if self.database.replica_url else None

    def _with_password(self, url: str) -> str:
        from sqlalchemy.engine import make_url

        db = self.database
        if not (db.password_env or db.password_file):
            return url
        password = read_secret("database.password", db.password_env, db.password_file,
                               permissions=self.key_file_permissions)
        return make_url(url).set(password=password).render_as_string(hide_password=False)


def read_secret(key: str, env_name: str, file_path: str, environ: Mapping[str, str] | None = None,
                permissions: str | None = None) -> str:
    """Read a secret from the named environment variable or file. ``permissions``: the file is a
    key file, judged by ``config.key_files`` with that policy (``refuse`` or ``warn``)."""
    environ = os.environ if environ is None else environ
    if env_name:
        value = environ.get(env_name, "").strip()
        if not value:
            raise ConfigError(key, f"environment variable {env_name} is not set")
        return value
    if file_path and permissions:
        from config.key_files import read_key_file

        return read_key_file(key, file_path, permissions).strip()
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ConfigError(key, f"cannot read {file_path}: {exc.strerror}") from None
    raise ConfigError(key, "no source configured (set *_env or *_file)")


def _parse_env_value(raw: str) -> Any:
    """An override is a TOML value when it parses as one, otherwise a plain string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


LIST_OF_TABLES = {("gateway", "listeners")}  # where an override's next key is a list index


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    node: Any = tree
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            index = int(part)
            while len(node) <= index:
                node.append({})
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, [] if tuple(path[: i + 1]) in LIST_OF_TABLES else {})


def _top_level_scalars() -> set[str]:
    """Top-level keys that are plain values (e.g. drop_dir): GRIDPAY_DROP_DIR overrides them.
    Other GRIDPAY_ variables with no ``__`` (ZMKs, test settings) are not configuration."""
    return {name for name, f in Settings.model_fields.items()
            if name != "source" and (f.annotation in (str, int, float, bool) or get_origin(f.annotation) is Literal)}


def apply_env_overrides(tree: dict, environ: Mapping[str, str]) -> dict:
    scalars = _top_level_scalars()
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        if "__" not in name and name[len(ENV_PREFIX):].lower() not in scalars:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        try:
            _set_path(tree, path, _parse_env_value(raw))
        except (ValueError, TypeError, AttributeError):
            raise ConfigError(".".join(path), f"cannot apply environment override {name}") from None
    return tree


def environment_for(tree: dict, prefix: str = "GRIDPAY") -> dict[str, str]:
    """The GRIDPAY_A__B variables that configure a settings tree (the inverse of the overrides;
    list items by index, values as TOML/JSON literals) — for process environments and env files."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}__{key}".upper() if prefix != "GRIDPAY" else f"GRIDPAY_{key}".upper()
        if isinstance(value, dict):
            out.update(environment_for(value, name))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, item in enumerate(value):
                out.update(environment_for(item, f"{name}__{i}"))
        else:
            out[name] = json.dumps(value)
    return out


def _first_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    return ConfigError(key, message)


def load_settings(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (or none), overlay the environment and validate."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV) or None
    tree: dict = {}
    if path:
        try:
            tree = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    apply_env_overrides(tree, environ)
    tree["source"] = str(path or "")
    # A command run with no configuration never creates a database in the current directory.
    tree["database_chosen"] = bool(path) or "url" in tree.get("database", {})
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        raise _first_error(exc) from None
    # the process writes its notices in the wording of the configuration it runs with
    notices.configure(settings.notices.templates.model_dump(), settings.notices.signature)
    return settings

"""Generate ``docs/configuration.md`` from the pydantic models in ``config/settings.py``.

    .venv/bin/python -m scripts.gen_config_docs            # (re)write docs/configuration.md
    .venv/bin/python -m scripts.gen_config_docs --check    # exit 1 if the committed page differs
    .venv/bin/python -m scripts.gen_config_docs --stdout   # print it

Every key of every model is listed with its type, default, constraints (from the field's
``Field(...)`` metadata), environment override and a description. A description comes from the
field itself (``Field(description=...)``) when the model has one, otherwise from ``DESCRIPTIONS``
below, keyed by dotted path (``banks.*.x`` for a bank's key, ``gateway.listeners[].x`` for a
listener's). A key with neither makes ``--check`` (and tests/test_ops_config_reference.py) fail,
so a new setting cannot land undocumented; so does an entry here for a key that no longer exists.
"""
from __future__ import annotations

import argparse
import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"

# Keys of the models that are not configuration (set by the loader itself).
INTERNAL = {"source", "database_chosen"}

DESCRIPTIONS: dict[str, str] = {
    # --- top level ---
    "reports_dir": "Where commands write their reports (CSV, HTML) unless told otherwise (`--reports`).",
    "key_file_permissions": "What a key file too open gets: a bank's ZMK file (`banks.<code>.zmk_file`, wherever "
                            "it is read: gateway, engines), a TLS listener's private key (`tls_key_file`, "
                            "checked when `gridpay serve` starts), the API's `api.tls_key_file` (checked when "
                            "`gridpay api` starts), the database's `password_file` and the "
                            "notifier's `secret_file` (wherever they are read). Too open, as ssh and PostgreSQL judge private "
                            "keys: others may use it, its group may write or execute it, or its group may read it "
                            "and root does not own it (so 0600 or 0400, or 0640 owned by root). `refuse`: a "
                            "configuration error naming the key, the file and its mode (`gridpay serve` does not "
                            "start); `warn`: one warning per file in the log, then the file is used.",
    "drop_dir": "The drop directory: `incoming/` (bank files, result files, finance statements, billing "
                "files), `processed/`, `rejected/`, `reports/`, `requests/`, and `outgoing/` (batch debit "
                "request files written by the engines). The engines' file mode and the gateway's watcher "
                "(`gateway.watch_drop_dir`) and `gridpay watch` use it (`--dir` overrides it).",

    "database": "The database; see `[database]`.",
    "business": "Business clock and approval thresholds; see `[business]`.",
    "gateway": "The counter-channel daemon `gridpay serve`; see `[gateway]`.",
    "notifier": "The SMS notifier `gridpay notifier` (docs/notifier.md); see `[notifier]`.",
    "reminders": "Overdue reminders: the schedule, quiet hours and minimum interval (docs/notifier.md); see "
                 "`[reminders]`.",
    "engines": "The debit engines `gridpay engine`; see `[engines]`.",
    "scheduler": "The plan scheduler `gridpay scheduler`; see `[scheduler]`.",
    "watch": "The drop-directory watcher `gridpay watch`; see `[watch]`.",
    "access": "Operators' log-ins, lock-out, sessions, password hashing and clients' API keys (docs/access.md); "
              "see `[access]`.",
    "api": "The operations HTTP API `gridpay api` (docs/api.md); see `[api]`.",
    "collection_rate": "The collection-rate exporter `gridpay collection-rate`; see `[collection_rate]`.",
    "archive": "Archiving months older than the retention, `gridpay ledger archive`; see `[archive]`.",
    "notices": "The SMS notices' wording: every notice's template and the signature (docs/notifier.md); see "
               "`[notices]`.",

    # --- [database] ---
    "database.url": "SQLAlchemy URL of the one database every process shares. `sqlite:///path` (embedded, WAL; "
                    "one host only), `postgresql+psycopg://user@host:5432/db`, "
                    "`oracle+oracledb://user@host:1521/?service_name=GRID` (driver: `pip install 'gridpay[oracle]'`; "
                    "untested against a server, none was available: tests only compile the Oracle DDL and "
                    "statements). Must not contain a password unless it comes from the `GRIDPAY_DATABASE__URL` "
                    "environment variable.",
    "database.password_env": "Name of the environment variable that holds the database password (inserted into "
                             "the URL at connect time).",
    "database.password_file": "Path of a file that holds the database password (first line, stripped; "
                              "for the service's user alone, see `key_file_permissions`). Give `password_env` or `password_file`, or neither for password-less (peer/cert) logins.",
    "database.replica_url": "SQLAlchemy URL of a PostgreSQL hot standby of `url` (streaming replication) for the "
                            "heavy reads that tolerate its lag: the reports (`gridpay report`, `GET /v1/reports`, the "
                            "console's reports), `gridpay collection-rate` and the console's day at a glance. Empty: "
                            "every read goes to `url`. The same user and password as `url` (a physical standby has "
                            "the primary's roles); no password in it unless it comes from "
                            "`GRIDPAY_DATABASE__REPLICA_URL`. Refused with a SQLite (or Oracle) `url`: replicas are "
                            "PostgreSQL's here. docs/runbook.md, \"A replica for reports\".",
    "database.pool_size": "Connections each process keeps in its SQLAlchemy pool (the gateway's and engines' "
                          "worker processes keep one each).",
    "database.group_commit_max": "Most postings that share one durable commit in the gateway's committer "
                                 "process, and most inquiries that share one read in its reader process.",
    "database.group_commit_wait_ms": "How long an idle committer waits for more postings before committing "
                                     "what it has (milliseconds); under load a batch is what queued during "
                                     "the previous commit.",
    "database.statement_timeout_s": "Upper bound for one statement on PostgreSQL (the gateway sets "
                                    "`statement_timeout` on its connections), so a wedged database fails a "
                                    "request (96) instead of holding it.",

    # --- [business] ---
    "business.timezone": "IANA time zone of business dates, cut-off, field 7 years and cron plans.",
    "business.cutoff": "Local time (HH:MM) from which postings belong to the next business date.",
    "business.refund_approval_resident_fen": "Refunds of a resident's prepaid balance from this amount (fen) "
                                             "on need two approvals (accounting centre and department director).",
    "business.refund_approval_nonresident_fen": "The same threshold (fen) for non-resident customers.",

    # --- [gateway] ---
    "gateway.metrics_host": "Interface of the operations HTTP port (`/metrics`, `/healthz`, `/readyz`). Behind "
                            "HAProxy it must be reachable from the HAProxy hosts (their health checks use `/readyz`).",
    "gateway.metrics_port": "Port of `/metrics`, `/healthz`, `/readyz` (0: any free port, printed at start).",
    "gateway.echo_interval_s": "A counter link with no traffic for this long is sent an echo (0800/301).",
    "gateway.key_grace_s": "After a bank signs on again, its previous MAK is still accepted this long.",
    "gateway.drain_timeout_s": "On SIGTERM: how long requests in flight may take to finish before connections are "
                               "closed anyway. The systemd unit's `TimeoutStopSec` must exceed it.",
    "gateway.log_file": "Log (and transaction log) file; empty: standard error (the journal under systemd).",
    "gateway.watch_drop_dir": "Run the drop-directory watcher (`drop_dir`) inside the gateway process instead of "
                              "a separate `gridpay watch`. Run one watcher per drop directory: enable it on one instance at most, "
                              "and not together with `gridpay watch`.",
    "gateway.listeners": "Counter-channel listening ports; see `[[gateway.listeners]]`.",

    # --- [[gateway.listeners]] ---
    "gateway.listeners[].name": "Name of the listener in logs.",
    "gateway.listeners[].host": "Interface to listen on (`0.0.0.0` for all IPv4 interfaces).",
    "gateway.listeners[].port": "TCP port (0: any free port, logged at start). Required.",
    "gateway.listeners[].dialect": "Dialect preset used on a connection before its bank is known (several banks "
                                   "share the source network); once known, the bank's own dialect is used.",
    "gateway.listeners[].banks": "Bank codes that may connect to this listener (each must have the `counter` "
                                 "channel). A connection is admitted when its source address is in one of these "
                                 "banks' `allowed_networks`.",
    "gateway.listeners[].tls_cert_file": "PEM certificate of the gateway: set it (and `tls_key_file`) to make the "
                                         "listener TLS-only.",
    "gateway.listeners[].tls_key_file": "PEM private key of `tls_cert_file`; for the service's user alone (0600, "
                                        "or 0640 owned by root; see `key_file_permissions`).",
    "gateway.listeners[].tls_client_ca_file": "PEM CA that must have signed the banks' client certificates; with "
                                              "it, a client certificate is required, and a bank's "
                                              "`client_cert_subject` is enforced.",

    # --- [banks.<code>] ---
    "banks": "One table per bank, keyed by its bank code (field 32, 1 to 11 digits).",
    "banks.*.name": "The bank's name as finance writes it, e.g. `中国工商银行广州分行` (stored in `banks.name`; the "
                     "reconciliation reports show it beside the bank code).",
    "banks.*.name_en": "The bank's name in English, for reports asked for in English (`--lang en`); empty: `name`.",
    "banks.*.dialect": "Wire dialect preset: `ascii` or `bcd` (docs/wire.md).",
    "banks.*.framing": "Overrides the preset's framing: `ascii4`, `bin2`, `bin2-tpdu`, `ascii4-tpdu`.",
    "banks.*.fields": "Overrides the preset's field encoding: `ascii` or `bcd`.",
    "banks.*.mac": "Overrides the preset's MAC method: `x919` or `x99`.",
    "banks.*.nii_gateway": "NII of the gateway in the TPDU (TPDU framings only).",
    "banks.*.nii_bank": "NII of the bank in the TPDU (TPDU framings only).",
    "banks.*.zmk_env": "Environment variable holding the bank's zone master key (32 hex digits). Give `zmk_env` "
                       "or `zmk_file`, not both.",
    "banks.*.zmk_file": "File holding the bank's zone master key (32 hex digits); for the service's user alone "
                        "(0600; see `key_file_permissions`).",
    "banks.*.channels": "Channels the bank uses: `counter` (the bank's counters connect to the gateway) and/or "
                        "`debit` (the engines send direct debits to the bank).",
    "banks.*.max_connections": "Most counter connections the bank may hold open at once on one gateway instance.",
    "banks.*.idle_timeout_s": "A counter connection with no bytes from the bank for this long is closed.",
    "banks.*.frame_timeout_s": "A frame begun but not finished within this time closes the connection.",
    "banks.*.request_timeout_s": "Time limit for the ledger's answer to one counter request: past it the bank gets "
                                 "96, but only where nothing can have been applied (a read, or a posting still "
                                 "queued; a posting inside a commit is waited for).",
    "banks.*.max_frame": "Largest frame (bytes after the length header) accepted from the bank.",
    "banks.*.allowed_networks": "Source networks (CIDR) the bank's counters may connect from. Behind HAProxy "
                                "(TCP mode, no transparent proxy) the gateway sees the HAProxy hosts' addresses: "
                                "list those, filter banks' networks in HAProxy, and identify banks by TLS client "
                                "certificate.",
    "banks.*.client_cert_subject": "On TLS listeners with a client CA: the subject common name the bank's "
                                   "certificate must carry (empty: any certificate the CA signed).",
    "banks.*.debit": "The debit channel to this bank's host; see `[banks.<code>.debit]`.",

    # --- [banks.<code>.debit] ---
    "banks.*.debit.mode": "`online`: the engines connect to the bank's host and send 0200s; `file`: batch "
                          "request files (`drop_dir/outgoing/`) and result files (`drop_dir/incoming/`).",
    "banks.*.debit.host": "The bank's debit host (online mode).",
    "banks.*.debit.port": "Its port (online mode; 0 is not usable there).",
    "banks.*.debit.connections": "TCP connections each engine keeps to the bank.",
    "banks.*.debit.timeout_s": "Answer timeout of a debit, reversal, sign-on or echo; also the longest a request "
                               "waits in the link's queue.",
    "banks.*.debit.reversal_interval_s": "Interval between repeats (0421) of an unanswered reversal.",
    "banks.*.debit.reversal_max": "Most repeats (0421) after the first 0420; then the reversal is `unanswered`.",
    "banks.*.debit.max_in_flight": "Most requests written and unanswered at once, per engine and bank.",
    "banks.*.debit.max_per_second": "Most requests written per second, per engine and bank (token bucket).",
    "banks.*.debit.echo_interval_s": "A debit connection silent this long sends an echo (0800/301).",
    "banks.*.debit.result_deadline_h": "File mode: a batch with no result file this many hours after its request "
                                       "was written expires; its debits become `unknown`.",

    # [notifier], [engines], [scheduler], [watch], [notices], [access]: the models' fields carry their own descriptions
    # (Field(description=...)).
}

# Rules across keys (model validators), by section path.
SECTION_NOTES: dict[str, str] = {
    "": "Secrets (`zmk`, `password`, `mak`, `secret`) may never be written in the file: name their source "
        "with `<secret>_env` (an environment variable) or `<secret>_file` (a path). Unknown keys are errors "
        "(`config error: banks.01020000.chanels: unknown key`).",
    "database": "A password inside `url` is refused unless the URL comes from `GRIDPAY_DATABASE__URL`.",
    "banks.*": "`zmk_env` and `zmk_file` exclude each other; `allowed_networks` entries must be networks.",
    "notifier": "`sender = \"http\"` needs `http_url`, and the URL, body and headers must be valid templates; "
                "`http_secret_header` needs `secret_env` or `secret_file` (not both); `lease_s` ≥ 3 × "
                "`http_timeout_s`; `backoff_max_s` ≥ `backoff_base_s`.",
    "access": "`totp_key_env` and `totp_key_file` exclude each other; `argon2_memory_kib` ≥ 8 × "
              "`argon2_parallelism`.",
    "notices.templates": "Each key is one notice's text (config/notices.py); a key not set keeps the built-in "
                         "text shown as its default. A template may hold only the placeholders listed for it, "
                         "written `{name}` (a literal brace: `{{` or `}}`), at most 280 characters; an unknown key "
                         "or placeholder is a configuration error naming the key. Every process that writes "
                         "notices (imports, corrections, the gateway's postings, the engines, reconciliation) "
                         "takes them from the configuration it loads.",
}


# --- walking the models -------------------------------------------------------------------

class Key(typing.NamedTuple):
    path: str        # pattern path, e.g. banks.*.debit.port
    section: str     # pattern path of its table, e.g. banks.*.debit
    name: str
    type: str
    default: str
    constraints: str
    env: str
    description: str | None
    model_described: bool = False


def _model_of(annotation) -> tuple[str, type[BaseModel]] | None:
    """('table' | 'list' | 'dict', model) when the annotation is a nested model (or a list/dict of them)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table", annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return "list", args[0]
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return "dict", args[1]
    return None


def type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        inner = type_name(args[0]) if args else "any"
        return f"list of {inner}"
    if origin is dict:
        return f"table of {type_name(args[1])}" if args else "table"
    if annotation is type(None):
        return "unset"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, getattr(
        annotation, "__name__", str(annotation)))


def toml_value(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) >= 1e15 else f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}" if value else "{}"
    return str(value)


def constraints(field) -> str:
    out = []
    names = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    for m in field.metadata:
        for attr, sym in names.items():
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v:,}" if isinstance(v, int) else f"{sym} {v}")
        if getattr(m, "max_length", None) is not None:
            out.append(f"at most {m.max_length} characters")
        if getattr(m, "min_length", None) is not None:
            out.append(f"at least {m.min_length} characters")
        if getattr(m, "pattern", None):
            out.append(f"matches `{m.pattern}`")
    return ", ".join(out)


def _env(parts: list[str]) -> str:
    return "GRIDPAY_" + "__".join(parts)


def walk(model: type[BaseModel] = None, prefix: str = "", env: list[str] | None = None) -> Iterator[Key]:
    from config.settings import Settings

    model = model or Settings
    env = env or []
    for name, field in model.model_fields.items():
        if not prefix and name in INTERNAL:
            continue
        path = f"{prefix}.{name}" if prefix else name
        nested = _model_of(field.annotation)
        description = field.description or DESCRIPTIONS.get(path)
        own = bool(field.description)
        if nested is None:
            default = "required" if field.default is PydanticUndefined and field.default_factory is None else \
                toml_value(field.get_default(call_default_factory=True))
            yield Key(path, prefix, name, type_name(field.annotation), default, constraints(field),
                      _env(env + [name.upper()]), description, own)
            continue
        kind, sub = nested
        if kind == "table":
            yield Key(path, prefix, name, "table", "", "", "", description, own)
            yield from walk(sub, path, env + [name.upper()])
        elif kind == "list":
            yield Key(path, prefix, name, "array of tables", "[]", "", "", description, own)
            yield from walk(sub, f"{path}[]", env + [name.upper(), "<N>"])
        else:
            yield Key(path, prefix, name, "tables keyed by code", "{}", "", "", description, own)
            yield from walk(sub, f"{path}.*", env + [name.upper(), "<CODE>"])


def _display(path: str) -> str:
    return path.replace(".*", ".<code>").replace("[]", "[N]")


def _heading(section: str) -> str:
    if not section:
        return "Top level"
    shown = _display(section)
    if section.endswith("[]"):
        return f"`[[{shown[:-3]}]]`"
    return f"`[{shown}]`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def problems(keys: list[Key] | None = None) -> list[str]:
    """What makes the reference incomplete: keys without a description, descriptions of no key."""
    keys = list(walk()) if keys is None else keys
    out = [f"{k.path}: no description (add one to DESCRIPTIONS in scripts/gen_config_docs.py)"
           for k in keys if not k.description]
    known = {k.path for k in keys}
    out += [f"{p}: described in DESCRIPTIONS but no such key" for p in DESCRIPTIONS if p not in known]
    out += [f"{k.path}: described both by the model and in DESCRIPTIONS (drop the DESCRIPTIONS entry)"
            for k in keys if k.model_described and k.path in DESCRIPTIONS]
    sections = {k.section for k in keys} | {""}
    out += [f"{s}: note in SECTION_NOTES but no such section" for s in SECTION_NOTES if s not in sections]
    return out


def render() -> str:
    keys = list(walk())
    sections: dict[str, list[Key]] = {}
    for k in keys:
        sections.setdefault(k.section, []).append(k)
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m scripts.gen_config_docs` from config/settings.py; do not edit by hand.",
        "     tests/test_ops_config_reference.py fails when this page and the code disagree. -->",
        "",
        "One TOML file, named by `--config FILE` or `GRIDPAY_CONFIG`; every process (`serve`, `engine`, "
        "`scheduler`, `notifier`, `watch` and the operator commands) reads the same file. Any key can be "
        "overridden by an environment variable `GRIDPAY_<KEY>__<KEY>...` (double underscore between levels, "
        "list items by index, values parsed as TOML when they parse, else taken as strings), shown in the "
        "*environment* column. Examples: `config/gridpay.example.toml` (a development machine) and "
        "`config/site.example.toml` (a production site: PostgreSQL, TLS, several banks in both dialects).",
        "",
        f"{len([k for k in keys if k.env])} keys in {len(sections)} tables.",
        "",
    ]
    for section, rows in sections.items():
        lines.append(f"## {_heading(section)}")
        lines.append("")
        if section in SECTION_NOTES:
            lines += [SECTION_NOTES[section], ""]
        lines.append("| key | type | default | constraints | environment | description |")
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for k in rows:
            default = f"`{_cell(k.default)}`" if k.default and k.default not in ("required",) else (k.default or "")
            env = f"`{k.env}`" if k.env else ""
            lines.append(f"| `{k.name}` | {_cell(k.type)} | {default} | {_cell(k.constraints)} | {env} | "
                         f"{_cell(k.description or '**UNDOCUMENTED**')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.gen_config_docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/configuration.md is not up to date")
    parser.add_argument("--stdout", action="store_true", help="print the page instead of writing it")
    parser.add_argument("--output", type=Path, default=DOC)
    args = parser.parse_args(argv)
    missing = problems()
    text = render()
    if args.stdout:
        sys.stdout.write(text)
        return 1 if missing else 0
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        for p in missing:
            print(f"gen_config_docs: {p}", file=sys.stderr)
        if current != text:
            diff = difflib.unified_diff(current.splitlines(), text.splitlines(), str(args.output), "generated",
                                        lineterm="", n=1)
            print("\n".join(list(diff)[:60]), file=sys.stderr)
            print(f"gen_config_docs: {args.output} is out of date: run `python -m scripts.gen_config_docs`",
                  file=sys.stderr)
            return 1
        return 1 if missing else 0
    for p in missing:
        print(f"gen_config_docs: {p}", file=sys.stderr)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())

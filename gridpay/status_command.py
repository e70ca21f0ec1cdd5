"""``gridpay status``: the operators' daily checks in one command (checks: ``gridpay.site_checks``).

Exit status 0 when all is well, 1 with the failing items listed otherwise, 2 for usage and
configuration errors.
"""
from __future__ import annotations

import json
import re
import sys

import click

from config import ConfigError, load_settings
from config.clock import SYSTEM_CLOCK
from gridpay.options import config_option
from gridpay.site_checks import Thresholds, duration, run_checks

LIMIT_NAMES = {"recon": "recon", "unknown-debit": "unknown_debit", "reversal": "reversal", "chunk": "chunk",
               "batch": "batch", "outbox": "outbox", "outbox-backlog": "outbox_backlog"}
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_limit(text: str) -> tuple[str, float]:
    """``NAME=VALUE``: a duration (``90s``, ``30m``, ``24h``, ``3d``; plain seconds), or a count for outbox-backlog."""
    name, sep, value = text.partition("=")
    if not sep or name not in LIMIT_NAMES:
        raise click.BadParameter(f"{text!r}: give NAME=VALUE with NAME one of {', '.join(LIMIT_NAMES)}")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", value.strip())
    if not match or (name == "outbox-backlog" and match[2]):
        wanted = "a number" if name == "outbox-backlog" else "a duration such as 30m, 24h, 3d"
        raise click.BadParameter(f"{text!r}: {wanted}")
    return LIMIT_NAMES[name], float(match[1]) * UNITS.get(match[2] or "s", 1)


def _limits(ctx, param, values) -> dict[str, float]:
    return dict(parse_limit(text) for text in values)


def _limits_help() -> str:
    th = Thresholds()
    return ", ".join(f"{cli}={th.outbox_backlog if attr == 'outbox_backlog' else duration(getattr(th, attr))}"
                     for cli, attr in LIMIT_NAMES.items())


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="print every check as one JSON document")
@click.option("--metrics", "metrics", multiple=True, metavar="URL",
              help="also read this process's /metrics (another host's engine or gateway), e.g. "
                   "http://10.10.1.22:9121/metrics; it must answer (repeatable)")
@click.option("--no-local-metrics", is_flag=True,
              help="do not try this host's gateway and engines' /metrics (gateway.metrics_port, "
                   "engines.metrics_port_base + N): sign-on from the database only")
@click.option("--limit", "limits", multiple=True, metavar="NAME=VALUE", callback=_limits,
              help="override a limit (repeatable); the defaults are the alert rules': " + _limits_help())
@click.option("--timeout", "timeout_s", default=3.0, show_default=True, type=click.FloatRange(0.1, 60),
              help="seconds to wait for each /metrics")
def status(config_path, as_json, metrics, no_local_metrics, limits, timeout_s) -> None:
    """The daily checks in one command: the database answers and is at the head migration; each
    bank's channels are signed on (from a gateway's or engine's /metrics where one answers, else from
    bank_keys) and each debit bank has a live engine; no engine has stopped without unregistering;
    reconciliation items, unknown debits, reversals and SMS notices are not left waiting too long;
    running batches progress.

    One line per check (OK or FAIL), then "all well" or the failing items. Exit status 0 when all is
    well, 1 otherwise, 2 for usage or configuration errors."""
    from dataclasses import replace

    thresholds = replace(Thresholds(), **{k: (int(v) if k == "outbox_backlog" else v) for k, v in limits.items()})
    now = SYSTEM_CLOCK.now()
    try:
        settings = load_settings(config_path)
        checks = run_checks(settings, now=now, thresholds=thresholds, metrics=list(metrics),
                            use_configured_metrics=not no_local_metrics, timeout_s=timeout_s)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    failing = [c for c in checks if not c.ok]
    if as_json:
        click.echo(json.dumps({
            "ok": not failing, "status": "all well" if not failing else "unhealthy",
            "checked_at": now.isoformat(timespec="seconds"), "config": settings.source or None,
            "limits": {name: getattr(thresholds, name) for name in Thresholds.names()},
            "checks": [c.as_dict() for c in checks], "failing": [c.name for c in failing]},
            indent=2, default=str))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            click.echo(f"{'OK  ' if c.ok else 'FAIL'}  {c.name.ljust(width)}  {c.detail}")
        if failing:
            click.echo(f"\n{len(failing)} of {len(checks)} checks failing:")
            for c in failing:
                click.echo(f"  - {c.name}: {c.detail}")
        else:
            click.echo("\nall well")
    sys.exit(1 if failing else 0)


__all__ = ["status"]

"""``gridpay collection-rate``: the billing period's collection rate as Prometheus gauges (one
exporter per site: ``ledger.collection_metrics`` says why), or, with ``--once``, printed; read from the
replica (``database.replica_url``) where there is one."""
from __future__ import annotations

import logging
import sys

import click

from gridpay.options import business_clock, config_option, open_database


def _print(figures) -> None:
    from functools import partial

    from ledger.reports.cells import yuan as yuan_of

    yuan = partial(yuan_of, grouped=False)

    def ratio(collected: int, billed: int) -> str:
        return f"{collected / billed:.2%}" if billed > 0 else "-"

    click.echo(f"collection rate, billing period {figures.period}: "
               f"{ratio(figures.total_collected, figures.total_billed)} "
               f"({yuan(figures.total_collected)} of {yuan(figures.total_billed)} yuan)")
    for district, billed in sorted(figures.billed.items()):
        collected = figures.collected.get(district, 0)
        click.echo(f"  district {district}: {ratio(collected, billed)} ({yuan(collected)} of {yuan(billed)})")
    for channel, collected in sorted(figures.by_channel.items()):
        click.echo(f"  channel {channel}: {ratio(collected, figures.total_billed)} ({yuan(collected)})")


@click.command("collection-rate")
@config_option
@click.option("--once", is_flag=True, help="print the period's figures and exit")
@click.option("--metrics-host", help="address of /metrics (default: collection_rate.metrics_host)")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="/metrics (default: collection_rate.metrics_port; 0 = any free port)")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def collection_rate(config_path, once, metrics_host, metrics_port, log_level) -> None:
    """Export the billing period's collection rate (collected / billed, by district and channel),
    read from the database at most every collection_rate.refresh_s; run exactly one per site."""
    import threading

    from ledger.collection_metrics import CollectionRateMetrics
    from ledger.collection_rate import billing_period, collection_figures
    from runtime.bootstrap import on_stop_signals
    from runtime.logging_setup import setup_logging
    from runtime.process_metrics import serve_threaded

    setup_logging("", getattr(logging, log_level))
    with open_database(config_path, needs_schema=True, replica=True) as (settings, engine):
        section, clock = settings.collection_rate, business_clock(settings)
        if once:
            with engine.connect() as conn:
                _print(collection_figures(conn, billing_period(clock, section.months_back)))
            return
        stop = threading.Event()
        on_stop_signals(lambda *_: stop.set())
        host = metrics_host or section.metrics_host
        metrics = CollectionRateMetrics.of(section, clock, replica=bool(settings.database.replica_url))
        port = serve_threaded(metrics, engine, host,
                              section.metrics_port if metrics_port is None else metrics_port, stop,
                              refresh_s=section.refresh_s)
        click.echo(f"gridpay collection-rate running: metrics http://{host}:{port}/metrics")
        sys.stdout.flush()
        stop.wait()

"""``gridpay serve``: run the gateway daemon until SIGTERM or SIGINT."""
from __future__ import annotations

import logging
import os
import sys

import click

from config import load_settings
from config.key_files import check_key_files
from gridpay.options import config_option, require_schema
from runtime.bootstrap import install_reactor, on_stop_signals
from runtime.logging_setup import setup_logging


@click.command()
@config_option
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def serve(config_path, log_level) -> None:
    """Run the gateway: counter-channel listeners, /metrics, /healthz and /readyz."""
    settings = load_settings(config_path)
    setup_logging(settings.gateway.log_file, getattr(logging, log_level))
    check_key_files(settings)
    # Database threads give up the interpreter lock on every round trip and must get it back from
    # the busy reactor thread, which by default hands it over only every 5 ms.
    sys.setswitchinterval(float(os.environ.get("GRIDPAY_SWITCH_INTERVAL_S", "0.0005")))
    reactor = install_reactor()
    from gateway.daemon import Gateway

    require_schema(settings.database_url())
    gateway = Gateway(settings, reactor)
    stopping = []

    def on_signal(signum, _frame):
        if not stopping:
            stopping.append(signum)
            logging.getLogger("gridpay.gateway").info("signal %d: draining", signum)
            reactor.callFromThread(lambda: gateway.stop().addBoth(lambda _: reactor.stop()))

    def started(_):
        on_stop_signals(on_signal)
        print(f"gridpay serving: {', '.join(f'{f.cfg.name}={gateway.port_of(f.cfg.name)}' for f in gateway.factories)}"
              f" metrics=http://{settings.gateway.metrics_host}:{gateway.ops_port.getHost().port}/metrics",
              flush=True)

    def failed(failure):
        logging.getLogger("gridpay.gateway").error("start-up failed: %s", failure.getErrorMessage())
        stopping.append("failed")
        gateway.abandon()
        reactor.stop()

    reactor.callWhenRunning(lambda: gateway.start().addCallbacks(started, failed))
    reactor.run(installSignalHandlers=False)
    if "failed" in stopping:
        sys.exit(1)

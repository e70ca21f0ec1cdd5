"""Process bootstrap shared by every long-running gridpay process: the reactor and the stop signals."""
from __future__ import annotations

import signal
import sys
from typing import Callable


def install_reactor():
    """Twisted on its asyncio reactor; installed once, before anything imports the reactor."""
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    from twisted.internet import reactor

    return reactor


def on_stop_signals(handler: Callable[[int, object], None]) -> None:
    """Call ``handler(signum, frame)`` on SIGTERM and SIGINT (installed once the process has started,
    so that a signal during start-up kills it outright)."""
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)

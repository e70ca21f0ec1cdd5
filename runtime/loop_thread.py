"""A loop in a thread of its own that can be asked to stop: the notifier's sending loop and its
reminders' timer (engines/). The subclass's ``_run`` checks ``stopping`` (and waits on it)."""
from __future__ import annotations

import threading


class LoopThread:
    def __init__(self, name: str):
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self):
        self.thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the loop to stop (what it has in hand it finishes) and wait for it; True when it has."""
        self.stopping.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self.stopping.is_set()

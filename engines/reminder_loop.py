"""The overdue reminders job on a timer, inside ``gridpay notifier`` (ledger/reminders.py).

A thread of its own, so that a long run (millions of customers) never holds up the sending; it
runs the job every ``interval_s`` as the ``system:reminders`` actor. In quiet hours the job
enqueues nothing and the loop simply waits for its next turn.
"""
from __future__ import annotations

import logging

from ledger.reminders import ReminderJob, ReminderReport
from runtime.loop_thread import LoopThread

log = logging.getLogger("gridpay.reminders")


class ReminderLoop(LoopThread):
    def __init__(self, job: ReminderJob, interval_s: float):
        super().__init__("gridpay-reminders")
        self.job, self.interval_s = job, interval_s
        job.stopping = self.stopping      # a run in hand stops after its batch of customers
        self.last_report: ReminderReport | None = None
        self.last_error: str | None = None

    def run_once(self) -> ReminderReport | None:
        try:
            report = self.job.run()
        except Exception as exc:  # noqa: BLE001 - the database is away: the next turn tries again
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            log.error("reminders run failed, next in %.0f s: %s", self.interval_s, self.last_error)
            return None
        self.last_report, self.last_error = report, None
        if report.quiet:
            log.info("reminders: quiet hours; nothing enqueued")
        else:
            log.info("reminders %s", report.summary())
        return report

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.run_once()
            self.stopping.wait(self.interval_s)

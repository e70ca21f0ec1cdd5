"""``ledger.group_commit.Poster`` in a thread of the test's own process, for tests that reach into
the engine while postings are posted (event hooks, a fault proxy, held commits).

Production runs the same ``Poster`` in a worker process (``runtime.worker_process.BatchProcess`` with
``ledger.group_commit.PostingWorker``); its batching and its answers-after-commit are tested there
(tests/test_ledger_batch_process.py, tests/test_ledger_group_commit.py). Here each ``submit`` is
one batch (or several of at most ``max_batch``), run in order; a posting whose future is cancelled
while its batch waits is dropped unposted, as the worker's parent drops a cancelled op.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from ledger.group_commit import Poster


class PosterThread:
    def __init__(self, engine, clock, **poster_options):
        self.poster = Poster(engine, clock, **poster_options)
        self.batches = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="test-poster", daemon=True)
        self._thread.start()

    def submit(self, postings, max_batch: int | None = None) -> list[Future]:
        futures = [Future() for _ in postings]
        step = max_batch or max(1, len(postings))
        for i in range(0, len(postings), step):
            self._queue.put(list(zip(postings[i:i + step], futures[i:i + step])))
        return futures

    def post(self, postings, max_batch: int | None = None, timeout: float = 120) -> list:
        return [f.result(timeout=timeout) for f in self.submit(postings, max_batch)]

    def stop(self, timeout: float = 30) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            live = [(p, f) for p, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                outcomes = self.poster.process([p for p, _ in live])
            except BaseException as exc:  # noqa: BLE001 - never leave a future unresolved
                for _, f in live:
                    f.set_exception(exc)
                continue
            self.batches += 1
            for (_, f), outcome in zip(live, outcomes):
                f.set_result(outcome)

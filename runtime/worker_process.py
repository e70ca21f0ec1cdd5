"""Database batches in a child process, away from the reactor's interpreter lock.

A Python process has one interpreter lock. A database thread gives it up on every round trip
(every SQLite step) and has to win it back from the busy reactor thread, so inside the gateway a
batch's dozen statements each waited for it: a group commit that takes 3 ms on its own took
10-30 ms under load, and every answer waited for it. ``BatchProcess`` runs a *worker* - any
object with ``process(ops) -> results`` (one result per op, an exception for a failed one), such
as the ledger's group commit - in a child process (``runtime.worker_child``):

    submit(op) ─▶ queue ─▶ one batch at a time (up to max_batch, or what is queued once its oldest
                           op has waited max_wait_s for company) ─▶ child: process ─▶ results

- A result comes only after ``process`` has returned (for a ledger worker: committed).
- ``submit(op, cancel_after=s)``: an op never sent to a child and still queued after ``s`` seconds
  fails with ``NotStarted`` at once (nothing was applied); an op a child has been given is waited
  for, unless it was submitted with ``abandon_late`` - then it fails with ``TimedOut`` (it may or
  may not have been applied), and its result is dropped when it comes. The child is told each
  op's time left (a little less: its answer must still arrive), for a worker that wants it.
- The child dies (killed, crashed): a new one is started; the batch the dead one had not answered
  goes to it again when ``resend`` is set, marked as resent (a worker that takes the context
  knows the op may already have been applied: the ledger's committer never answers 96 for such a
  posting without looking it up), else its ops fail with ``WorkerLost``.
- The parent dies, even by kill -9: the child reads end-of-file and exits after its current batch.
- ``stop()``: what was submitted is processed, then the child exits.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol

from config import notices
from runtime.worker_child import FrameBuffer, WorkerError, frame

__all__ = ["BatchProcess", "NotStarted", "TimedOut", "WorkerLost", "WorkerError"]

log = logging.getLogger("gridpay.ledger.batch_process")
MAX_SENDS = 3  # a batch goes to at most this many children in turn: a poison op must not loop


def current_log_file() -> str:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return ""


class NotStarted(Exception):
    """The op had not begun when it was cancelled or the worker stopped: nothing was applied."""


class TimedOut(Exception):
    """An op submitted with ``abandon_late`` was still with a child, or waiting to be sent again
    after its child died, when its time ran out: it may or may not have been applied."""


class WorkerLost(Exception):
    """The child died before answering, and the op is not sent again: it may or may not have been
    applied."""


DEADLINE_MARGIN = 0.05   # the child's deadline is this part of the time left earlier (at most 0.25 s)


@dataclass
class _Call:
    op: object
    deferred: defer.Deferred
    submitted: float
    deadline: float | None = None
    timer: object = None
    sends: int = 0
    abandon_late: bool = False


class BatchProcess:
    """The parent's handle on one worker child. Reactor thread only."""

    def __init__(self, reactor, worker: str, config: dict, *, name: str, max_batch: int = 256,
                 max_wait_s: float = 0.0, resend: bool = False, restart_delay_s: float = 1.0, on_batch=None):
        assert max_batch >= 1
        # the child logs where its parent does, and words its notices as its parent's configuration says
        config = {"log_file": current_log_file(), "notices": notices.current(), **config}
        self.reactor, self.worker, self.config, self.name = reactor, worker, config, name
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.resend, self.restart_delay_s, self.on_batch = resend, restart_delay_s, on_batch
        self.batches = self.ops = self.restarts = 0
        self.busy_s = 0.0
        self._calls: dict[int, _Call] = {}
        self._queue: deque[int] = deque()
        self._in_flight: list[int] = []
        self._company = None          # the timer of an idle worker waiting for company
        self._next_id = 0
        self._link: _ChildProtocol | None = None
        self._popen: subprocess.Popen | None = None
        self._ready = False
        self._stopping = False
        self._started: defer.Deferred | None = None
        self._stopped: defer.Deferred | None = None
        self._kill_call = None
        self._sent_at: float | None = None   # when the batch the child is working on went to it

    # --- life cycle --------------------------------------------------------------------------

    def start(self) -> defer.Deferred:
        """Fires with self when the worker is ready, or fails if it could not start."""
        self._started = defer.Deferred()
        self._spawn()
        return self._started

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def stop(self, drain: bool = True, timeout: float | None = None) -> defer.Deferred:
        """Drain: everything submitted is processed, then the child exits. Without drain, what
        is still queued fails with NotStarted. After timeout the child is killed."""
        self._stopping = True
        if self._stopped is None:
            self._stopped = defer.Deferred()
            if timeout is not None:
                self._kill_call = self.reactor.callLater(timeout, self.kill)
        if not drain or not self._ready:
            while self._queue:
                self._resolve_unsent(self._queue.popleft(), "database worker stopping")
        if self._link is None:  # no child now, and none will be started
            self._stopped_now()
        else:
            self._pump()
        return self._stopped

    def _stopped_now(self) -> None:
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        if not self._stopped.called:
            self._stopped.callback(None)

    def kill(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            log.error("%s: killing worker process %d", self.name, self._popen.pid)
            os.kill(self._popen.pid, signal.SIGKILL)

    def _spawn(self) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._popen = subprocess.Popen([sys.executable, "-m", "runtime.worker_child", str(child_end.fileno())],
                                           pass_fds=[child_end.fileno()])
        finally:
            child_end.close()
        self._link = _ChildProtocol(self)
        self.reactor.adoptStreamConnection(parent_end.fileno(), socket.AF_UNIX, _LinkFactory(self._link))
        parent_end.close()  # the reactor keeps a duplicate of its own
        self._link.send(("start", self.worker, self.config))

    # --- ops ---------------------------------------------------------------------------------

    def submit(self, op, cancel_after: float | None = None, abandon_late: bool = False) -> defer.Deferred:
        """The op's result, once processed; NotStarted if cancelled first, TimedOut if late and
        ``abandon_late`` (see the module doc)."""
        d = defer.Deferred()
        if self._stopping:
            d.errback(NotStarted("database worker stopping: nothing was applied"))
            return d
        self._next_id += 1
        call_id = self._next_id
        call = self._calls[call_id] = _Call(op, d, self.reactor.seconds(), abandon_late=abandon_late)
        if cancel_after is not None:
            call.deadline = call.submitted + cancel_after
            call.timer = self.reactor.callLater(cancel_after, self._cancel, call_id)
        self._queue.append(call_id)
        self._pump()
        return d

    def _company_came(self) -> None:
        self._company = None
        self._pump()

    def _pump(self) -> None:
        """Send the next batch when the worker is idle and the batch is full or its oldest op has
        waited max_wait_s for company; or finish stopping once everything is answered."""
        if self._in_flight or not self._ready:
            return
        waiting = len(self._queue) < self.max_batch and not self._stopping
        if self._company is not None and self._company.active():
            if waiting:
                return
            self._company.cancel()
        self._company = None
        if self._queue and waiting:
            wait = self._calls[self._queue[0]].submitted + self.max_wait_s - self.reactor.seconds()
            if wait > 0:
                self._company = self.reactor.callLater(wait, self._company_came)
                return
        if self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._in_flight = batch
            now = self.reactor.seconds()
            calls = [self._calls[call_id] for call_id in batch]
            lefts, sent_before = [], []
            for i, call in enumerate(calls):
                if call.sends:
                    sent_before.append(i)
                call.sends += 1
                left = None if call.deadline is None else call.deadline - now
                lefts.append(None if left is None else max(0.0, left - min(0.25, left * DEADLINE_MARGIN)))
            self._sent_at = now
            self._link.send(("batch", [(call_id, call.op) for call_id, call in zip(batch, calls)], lefts, sent_before))
        elif self._stopping:
            self._link.send(("stop",))

    def _cancel(self, call_id: int) -> None:
        call = self._calls.get(call_id)
        if call is None:
            return
        call.timer = None
        if call_id in self._queue and call.sends == 0:  # not sent to any child: certainly not applied
            self._queue.remove(call_id)
            self._resolve(call_id, NotStarted("timed out waiting for the database: nothing was applied"))
        elif call.abandon_late:
            if call_id in self._queue:  # waiting to go to the successor of a child that died with it
                self._queue.remove(call_id)
            self._resolve(call_id, TimedOut("the database did not answer in time"))
        # else with a child, or to be sent again: its result is waited for

    def _resolve_unsent(self, call_id: int, why: str) -> None:
        """An op taken off the queue for good: never sent, or sent to a child that died with it."""
        if self._calls[call_id].sends:
            self._resolve(call_id, WorkerLost(f"{why}; the database worker died with it before answering"))
        else:
            self._resolve(call_id, NotStarted(f"{why}: nothing was applied"))

    def _resolve(self, call_id: int, result) -> None:
        call = self._calls.pop(call_id, None)
        if call is None:
            return
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        if isinstance(result, BaseException):
            call.deferred.errback(result)
        else:
            call.deferred.callback(result)

    # --- from the child ----------------------------------------------------------------------

    def received(self, message) -> None:
        kind = message[0]
        if kind == "done":
            _, results, elapsed = message
            self._in_flight = []
            self._sent_at = None
            self.batches += 1
            self.ops += len(results)
            self.busy_s += elapsed
            for call_id, result in results:
                self._resolve(call_id, result)
            if self.on_batch is not None:
                self.on_batch(len(results), elapsed)
            self._pump()
        elif kind == "ready":
            self._ready = True
            log.info("%s: worker process %d ready", self.name, message[1])
            if not self._started.called:
                self._started.callback(self)
            self._pump()
        elif kind == "failed":
            log.error("%s: worker could not start: %s", self.name, message[1])
            self._give_up(RuntimeError(f"{self.name}: worker could not start: {message[1]}"))

    def working_for(self) -> float:
        """Seconds the child has been on its current batch (0 when it has none): a batch that does
        not end - its transaction waiting behind a lock, say - shows here, while the callers'
        deadlines answer them and the database still answers other connections."""
        return 0.0 if self._sent_at is None else self.reactor.seconds() - self._sent_at

    def lost(self) -> None:
        """The child's socket closed: it exited, was killed, or crashed."""
        self._sent_at = None
        self._ready, self._link = False, None
        popen, self._popen = self._popen, None
        if popen is not None:
            self.reactor.callInThread(popen.wait)  # reap it
        if not self._started.called:
            self._give_up(RuntimeError(f"{self.name}: worker process exited during start-up"))
        batch = [call_id for call_id in self._in_flight if call_id in self._calls]  # not abandoned
        self._in_flight = []
        if self._stopping:
            for call_id in batch:
                self._resolve(call_id, WorkerLost("database worker stopped before answering"))
            while self._queue:
                self._resolve_unsent(self._queue.popleft(), "database worker stopped")
            if self._stopped is not None:
                self._stopped_now()
            return
        self.restarts += 1
        for call_id in reversed(batch):
            if self.resend and self._calls[call_id].sends < MAX_SENDS:
                self._queue.appendleft(call_id)
            else:
                self._resolve(call_id, WorkerLost("database worker lost before answering"))
        log.error("%s: worker process lost; restarting it (%d ops wait)", self.name, len(self._queue))
        self.reactor.callLater(self.restart_delay_s, self._respawn)

    def _respawn(self) -> None:
        if not self._stopping and self._link is None:
            self._spawn()

    def _give_up(self, exc: Exception) -> None:
        self._stopping = True
        if not self._started.called:
            self._started.errback(exc)


class _ChildProtocol(Protocol):
    """The socket to one child: frames in and out."""

    def __init__(self, owner: BatchProcess):
        self.owner = owner
        self.frames = FrameBuffer()
        self._early: list[bytes] = []

    def send(self, message) -> None:
        data = frame(message)
        if self.transport is None:
            self._early.append(data)
        else:
            self.transport.write(data)

    def connectionMade(self) -> None:
        for data in self._early:
            self.transport.write(data)
        self._early.clear()

    def dataReceived(self, data: bytes) -> None:
        for message in self.frames.feed(data):
            self.owner.received(message)

    def connectionLost(self, reason=None) -> None:
        self.owner.lost()


class _LinkFactory(Factory):
    def __init__(self, protocol: _ChildProtocol):
        self.protocol_instance = protocol

    def buildProtocol(self, addr):
        self.protocol_instance.factory = self
        return self.protocol_instance

"""The child's half of ``runtime.worker_process``: run each batch it is sent, answer, repeat.

Run as ``python -m runtime.worker_child FD``. The first message on the socket names the worker
(``module:factory``) and its configuration, so a database password never shows on a command
line. Standard library only here (and the one log set-up, runtime.logging_setup); the worker brings its
own imports.

Messages are pickles, each behind a 4-byte big-endian length (both ends are ours):
parent → child ``("start", worker, config)``,
``("batch", [(id, op)], [seconds left or None, per op], [index of each op sent before])``,
``("stop",)``; child → parent ``("ready", pid)``, ``("failed", why)``, ``("done", [(id, result)], seconds)``.
End of file (the parent is gone, even killed with -9) ends the child after its current batch.

A worker whose class sets ``takes_context = True`` is called ``process(ops, deadlines, resent)``:
per op, its deadline on this process's ``time.monotonic()`` (None: it has none) and whether it was
in a batch whose child died before answering.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass

from config import notices
from runtime.gc_settle import settle_gc

HEADER = struct.Struct(">I")
log = logging.getLogger("gridpay.ledger.batch_child")


@dataclass
class WorkerError(Exception):
    """The worker raised for this op: the child's exception, by name and first line."""
    kind: str
    text: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}"


def frame(message) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


class FrameBuffer:
    """Bytes in, whole messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list:
        self._buffer += data
        messages, start = [], 0
        while len(self._buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer, start)
            end = start + HEADER.size + size
            if len(self._buffer) < end:
                break
            messages.append(pickle.loads(self._buffer[start + HEADER.size:end]))
            start = end
        del self._buffer[:start]
        return messages


def messages(sock: socket.socket):
    """Every message the parent sends, until end of file."""
    frames = FrameBuffer()
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return
        yield from frames.feed(data)


def _load(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _portable(result):
    if isinstance(result, BaseException):
        text = str(result)
        return WorkerError(type(result).__name__, text.splitlines()[0] if text else "")
    return result


def _setup_logging(log_file: str | None) -> None:
    from runtime.logging_setup import setup_logging  # the parent's set-up: its file, every line masked

    setup_logging(log_file or "")


def serve(sock: socket.socket) -> None:
    incoming = messages(sock)
    start = next(incoming, None)
    if start is None:
        return
    _, worker_path, config = start
    _setup_logging(config.get("log_file"))
    try:
        notices.configure(**config.get("notices", {}))
        worker = _load(worker_path)(config)
    except Exception as exc:  # noqa: BLE001 - told to the parent, which logs it
        sock.sendall(frame(("failed", f"{type(exc).__name__}: {exc}")))
        return
    settle_gc()
    sock.sendall(frame(("ready", os.getpid())))
    profile = _profiler()
    try:
        for message in incoming:
            if message[0] == "stop":
                break
            sock.sendall(frame(("done", *run(worker, message[1], profile, message[2:]))))
    finally:
        close = getattr(worker, "close", None)
        if close is not None:
            close()
        if profile is not None:
            profile.dump_stats(os.path.join(os.environ["GRIDPAY_WORKER_PROFILE"],
                                            f"{worker_path.rpartition(':')[2]}-{os.getpid()}.prof"))


def _profiler():
    """GRIDPAY_WORKER_PROFILE=DIR: a cProfile of the worker's batches, written there at exit."""
    if not os.environ.get("GRIDPAY_WORKER_PROFILE"):
        return None
    import cProfile

    return cProfile.Profile()


def run(worker, batch: list, profile=None, context: tuple = ()) -> tuple[list, float]:
    started = time.perf_counter()
    try:
        ops = [op for _, op in batch]
        args = [ops]
        if context and getattr(worker, "takes_context", False):
            lefts, sent_before = context
            now = time.monotonic()
            resent = [False] * len(ops)
            for i in sent_before:
                resent[i] = True
            args += [[None if left is None else now + left for left in lefts], resent]
        results = worker.process(*args) if profile is None else profile.runcall(worker.process, *args)
    except Exception as exc:  # noqa: BLE001 - every op of the batch gets the error
        log.warning("a batch of %d failed: %s: %s", len(batch), type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        results = [exc] * len(batch)
    return [(call_id, _portable(r)) for (call_id, _), r in zip(batch, results)], time.perf_counter() - started


def main(argv: list[str]) -> None:
    # The parent owns this process's life: it says stop, or its end of the socket closes. Ctrl-C in
    # a terminal (SIGINT to the whole process group) or a SIGTERM to every process of a service
    # would otherwise kill a worker in the middle of the parent's orderly drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    try:
        serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent is gone: nothing more can be answered
    finally:
        sock.close()


if __name__ == "__main__":
    # Run as the importable module, not as __main__: what it pickles (WorkerError) must name a class
    # the parent can find.
    from runtime.worker_child import main as _main

    _main(sys.argv[1:])

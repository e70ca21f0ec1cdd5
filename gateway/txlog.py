"""One structured log line per transaction, with customer and account numbers masked.

The line goes where the ``gridpay.tx`` logger's records go. A busy gateway writes thousands
a second, so when those handlers are plain files or streams with the daemon's line format
(``gridpay.serve_command.setup_logging``) the line is formatted here, as the handler would, and put
into the stream's buffer without a flush per line: ``flush()`` (the daemon calls it on a
timer and when it stops), any other log record and the process's exit write it out. Any
other set-up (capture handlers in tests, other formats, filters) gets an ordinary record.

A frame the gateway drops unanswered is not a transaction anyone waits for, and a peer can send
them as fast as its bytes go: their lines are written within the connection's ``Allowance``, so
no input makes the log grow faster than a small multiple of the bytes it takes.
"""
from __future__ import annotations

import json
import logging
import re
import time

from iso8583_specs.masking import mask_number

log = logging.getLogger("gridpay.tx")

LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
PLAIN_TEXT = re.compile(r'[^"\\\x00-\x1f]*\Z')  # what json.dumps(ensure_ascii=False) leaves as it is


class Allowance:
    """The log bytes a connection's dropped frames may still take: ``start``, then ``per_byte`` for
    every byte the connection sends, held to ``most`` (a quiet day banks no licence for a burst).
    Lines over it are counted in ``held``; the next line written says how many."""

    def __init__(self, start: int = 4096, per_byte: float = 1.0, most: int = 65536):
        self.left = float(start)
        self.per_byte = per_byte
        self.most = most
        self.held = 0

    def earn(self, nbytes: int) -> None:
        self.left = min(self.most, self.left + nbytes * self.per_byte)

    def spend(self, nbytes: int) -> bool:
        if nbytes > self.left:
            self.held += 1
            return False
        self.left -= nbytes
        return True


LINE_HEAD = len("2026-01-01 00:00:00,000 INFO gridpay.tx \n")


def log_exchange(ex, now: float, allowance: Allowance | None = None) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    message = transaction_json(ex, now)
    if allowance is not None:
        held = allowance.held
        if not allowance.spend(LINE_HEAD + len(message.encode()) + 32):  # 32: room for the count of held lines
            return
        if held:
            allowance.held = 0
            message = f'{message[:-1]}, "not_logged_before": {held}}}'
    handlers = _direct_handlers()
    if handlers is None:
        log.info(message)
        return
    line = f"{_asctime(time.time())} INFO {log.name} {message}\n"
    for handler in handlers:
        with handler.lock:
            handler.stream.write(line)


def transaction_json(ex, now: float) -> str:
    """The same text as ``json.dumps(record, ensure_ascii=False)`` of the record below, built directly."""
    rc = _text(ex.code) if not ex.silent and ex.code is not None else "null"
    text = (f'{{"bank": {_text(ex.bank or ex.fields.get("32", ""))}, "mti": {_text(ex.mti)}, '
            f'"pc": {_text(ex.processing_code)}, "stan": {_text(ex.fields.get("11", ""))}, '
            f'"rrn": {_text(ex.fields.get("37", ""))}, "rc": {rc}, '
            f'"latency_ms": {round((now - ex.received) * 1000, 2)!r}, "kind": {_text(ex.kind)}')
    customer = ex.first("CN")
    if customer:
        text += f', "customer": {_text(mask_number(customer))}'
    amount = ex.fields.get("4")
    if amount:
        text += f', "amount": {int(amount)}' if amount.isdigit() else f', "amount": {_text(amount)}'
    if ex.replayed:
        text += ', "replayed": true'
    if ex.detail:
        text += f', "detail": {_text(ex.detail)}'
    return text + "}"


def _text(value) -> str:
    if type(value) is str and PLAIN_TEXT.match(value):
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=False)


def flush() -> None:
    """Write out the lines buffered in the handlers' streams."""
    for handler in _direct_handlers() or ():
        handler.flush()


# --- where the lines go -------------------------------------------------------------------

_decided: dict[tuple, tuple | None] = {}


def _direct_handlers() -> tuple | None:
    """The handlers a gridpay.tx record would reach, when each is a plain stream with the
    daemon's format (the line can be written for them); None otherwise."""
    handlers, logger = [], log
    while logger is not None:
        handlers.extend(logger.handlers)
        logger = logger.parent if logger.propagate else None
    key = tuple((h, h.formatter, h.level, len(h.filters)) for h in handlers)
    if key not in _decided:
        plain = handlers and all(_plain_stream(h) for h in handlers)
        _decided[key] = tuple(handlers) if plain else None
    return _decided[key]


def _plain_stream(handler) -> bool:
    fmt = handler.formatter
    return (type(handler) in (logging.StreamHandler, logging.FileHandler) and handler.stream is not None
            and not handler.filters and handler.level <= logging.INFO
            and type(fmt) is logging.Formatter and fmt._fmt == LINE_FORMAT and fmt.datefmt is None
            and type(fmt._style) is logging.PercentStyle and fmt.converter is time.localtime
            and fmt.default_time_format == "%Y-%m-%d %H:%M:%S" and fmt.default_msec_format == "%s,%03d")


_second: list = [None, ""]


def _asctime(created: float) -> str:
    """``logging.Formatter.formatTime`` of a record created at ``created`` (local time, milliseconds)."""
    whole = int(created)
    if _second[0] != whole:
        _second[:] = [whole, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))]
    return "%s,%03d" % (_second[1], int((created - whole) * 1000) + 0.0)

"""How every gridpay process logs: one line format, and every line masked before it is written.

``setup_logging`` is the one log set-up of every process: ``gridpay serve``, the engines, the
scheduler, the notifier, ``gridpay watch``, and the worker processes the gateway and the engines
start (runtime/worker_child.py). ``mask_last_resort`` masks what commands that set up nothing
print (Python's handler of last resort: their warnings and errors); ``gridpay`` calls it first.

The masking sits in the handlers' streams, beneath the formatter: it sees each line as it is
written, with its message, arguments and traceback, and also the transaction log's lines, which
gateway/txlog.py writes into the stream itself. What it masks (``mask_line``), with
``iso8583_specs.masking.mask_number`` (``0100****11``):

- a value labelled as a customer, account, card or mobile number: after ``customer``,
  ``customer_no``, ``account``, ``acct``, ``card``, ``pan``, ``mobile`` (any case) or ``CN``,
  then ``=``, ``:``, quotes or spaces (``no customer 0100000011``, ``customer_no='0100000011'``,
  ``"customer": "…"``), a word holding a digit; in a field 48 ``CN`` element, its value;
- the values of SQLAlchemy's ``[parameters: …]`` and of PostgreSQL's ``Key (…)=(…)``, which
  name no column beside a value: each quoted string holding a digit, each key value;
- any other run of 16 to 19 digits (a card number's shape; RRNs, amounts and field 7 are shorter).

A value already masked (it holds ``*``) is left as it is.
"""
from __future__ import annotations

import logging
import re
import sys

from iso8583_specs.masking import mask_number

LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_LABELLED = re.compile(  # matched on the line in lower case (a case-insensitive pattern is several times slower)
    r"(?P<label>customer(?:[ _-]?(?:no|number|id))?|cust_?no|account(?:[ _-]?(?:no|number|id))?|acct(?:_?no)?"
    r"|card(?:[ _-]?(?:no|number))?|pan|mobile|cn)"
    r"(?P<sep>[\"']?[ \t]*[:=]?[ \t]*[\"'(]?)(?P<value>[0-9a-z*]*[0-9][0-9a-z*]*)")
_LABELLED_ANY_CASE = re.compile(_LABELLED.pattern, re.IGNORECASE)
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
_QUOTED_WITH_DIGIT = re.compile(r"'([^'\n]*[0-9][^'\n]*)'")
_KEY_VALUES = re.compile(r"(Key \([^)\n]*\)=\()([^)\n]*)")
_DIGIT_RUN = re.compile(r"[0-9]{16,19}")


def mask_line(text: str) -> str:
    """``text`` with customer, account and card numbers masked (the rules above)."""
    text = _mask_labelled(text)
    if "[parameters: " in text:
        text = _PARAMETERS.sub(lambda m: _QUOTED_WITH_DIGIT.sub(lambda q: f"'{_mask(q[1])}'", m[0]), text)
    if "Key (" in text:
        text = _KEY_VALUES.sub(lambda m: m[1] + ", ".join(_mask(v) for v in m[2].split(", ")), text)
    return _DIGIT_RUN.sub(_mask_digit_run, text)


def _mask_labelled(text: str) -> str:
    lowered = text.lower()
    found = _LABELLED.finditer(lowered) if len(lowered) == len(text) else _LABELLED_ANY_CASE.finditer(text)
    parts, done = [], 0
    for match in found:
        start, (value_start, value_end) = match.start(), match.span("value")
        label = text[start:match.end("label")]
        if (start and text[start - 1] in _WORD) or (label.lower() == "cn" and label != "CN"):
            continue
        value = text[value_start:value_end]
        if label == "CN" and not match["sep"] and value[:3].isdigit() and len(value) > 3:
            size = int(value[:3])  # a field 48 element: CN, its length, its value
            masked = value[:3] + _mask(value[3:3 + size]) + value[3 + size:]
        else:
            masked = _mask(value)
        parts += [text[done:value_start], masked]
        done = value_end
    return "".join(parts) + text[done:] if parts else text


def _mask_digit_run(match: re.Match) -> str:
    text, (start, end) = match.string, match.span()
    if (start and text[start - 1] in _WORD) or (end < len(text) and text[end] in _WORD):
        return match[0]
    return mask_number(match[0])


def _mask(value: str) -> str:
    return value if "*" in value else mask_number(value)


class MaskedStream:
    """A text stream whose every write reaches ``stream`` masked; everything else is ``stream``'s."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(mask_line(text))

    def __getattr__(self, name):
        return getattr(self.stream, name)


def setup_logging(log_file: str = "", level: int = logging.INFO) -> None:
    """The process's one log handler: ``log_file`` (appended to), or standard error; every line masked."""
    handler = _file_handler(log_file) if log_file else logging.StreamHandler(MaskedStream(sys.stderr))
    handler.setFormatter(logging.Formatter(LINE_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    mask_last_resort()


def _file_handler(path: str) -> logging.FileHandler:
    """A plain FileHandler (the transaction log and the worker processes look for one) whose
    stream is masked, also when the handler opens its file again after being closed."""
    handler = logging.FileHandler(path, delay=True)
    plain_open = handler._open
    handler._open = lambda: MaskedStream(plain_open())
    handler.stream = handler._open()
    return handler


class _MaskedLastResort(logging.StreamHandler):
    """Python's handler of last resort (warnings and errors to standard error, as they are
    printed when no handler is set up), masked."""

    def __init__(self) -> None:
        logging.Handler.__init__(self, logging.WARNING)

    @property
    def stream(self):
        return MaskedStream(sys.stderr)


def mask_last_resort() -> None:
    if not isinstance(logging.lastResort, _MaskedLastResort):
        logging.lastResort = _MaskedLastResort()

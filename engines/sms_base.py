"""What every SMS sender shares (engines/sms.py, engines/sms_aliyun.py): the notice as a sender sees
it, the error that tells the notifier what it may do, and one HTTP exchange on a connection of its own."""
from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import asdict, dataclass
from typing import Mapping, Protocol

from config.sms_request import PLACEHOLDERS

MAX_ANSWER = 64 * 1024


@dataclass(frozen=True)
class Notice:
    """One outbox row, as a sender sees it."""
    id: int
    customer_no: str
    mobile: str
    kind: str
    text: str
    ref: str
    attempts: int = 0   # attempts made before this one
    params: str | None = None   # the notice's values as JSON (outbox.params), e.g. a reminder's amount

    def values(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items() if k in PLACEHOLDERS}


class SendError(Exception):
    def __init__(self, kind: str, reason: str, detail: str, retry_after_s: float | None = None):
        assert kind in ("transient", "permanent", "unknown"), kind
        super().__init__(f"{reason}: {detail}")
        self.kind, self.reason, self.detail, self.retry_after_s = kind, reason, detail, retry_after_s


class Sender(Protocol):
    name: str

    def send(self, notice: Notice) -> None: ...

    def close(self) -> None: ...


def exchange(parts, context, timeout: float, method: str, target: str, body: bytes | None, headers: Mapping[str, str],
             retry_unknown: bool = False):
    """One request on a connection of its own: (response, up to MAX_ANSWER bytes of its body).
    Refused before anything was written: transient (``connect``); no answer after writing: the
    message may have gone out, so ``unknown`` (transient with ``retry_unknown``)."""
    if context is not None:
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    unknown = "transient" if retry_unknown else "unknown"
    try:
        try:
            conn.connect()
        except (OSError, ssl.SSLError) as exc:   # nothing was written: safe to retry
            raise SendError("transient", "connect", describe_error(exc)) from None
        try:
            conn.request(method, target, body=body, headers=dict(headers))
            response = conn.getresponse()
            return response, response.read(MAX_ANSWER)
        except (TimeoutError, socket.timeout) as exc:
            raise SendError(unknown, "timeout", describe_error(exc) or "no answer in time") from None
        except (OSError, http.client.HTTPException) as exc:
            raise SendError(unknown, "broken", describe_error(exc)) from None
    finally:
        conn.close()


def describe_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text

"""SMS senders for the notifier (``engines.notifier``): an HTTP SMS gateway, and a file for tests and demos.

A sender's ``send(notice)`` blocks (the notifier calls it from a worker thread) and either returns
(the gateway took the message) or raises ``SendError``, whose ``kind`` tells the notifier what it may do:

- ``transient``: certainly not delivered, or the gateway asked for a retry (connection refused,
  HTTP 5xx, 429): retried with backoff;
- ``permanent``: the gateway refused it for good (HTTP 4xx other than 429, 3xx, a 2xx whose
  JSON field check fails): dead at once;
- ``unknown``: the request was written but no answer came (timeout, connection lost): the
  message may have gone out. At most once: dead, unless ``http_retry_unknown`` is set.

``reason`` is a short class for metrics and logs (``connect``, ``http_5xx``, ``http_429``,
``http_4xx``, ``http_3xx``, ``rejected``, ``timeout``, ``broken``, ``file``).
"""
from __future__ import annotations

import fcntl
import json
import os
import ssl
from dataclasses import asdict
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from config.clock import SYSTEM_CLOCK
from config.sms_request import DEFAULT_JSON_TEMPLATE, fill, http_request
from engines.sms_base import MAX_ANSWER, Notice, SendError, Sender, exchange, describe_error

__all__ = ["FileSender", "HttpSender", "MAX_ANSWER", "Notice", "SendError", "Sender", "exchange", "sender_from_config"]


def json_field(document: Any, path: str) -> Any:
    """``a.b.0.c`` in a decoded JSON document; KeyError when missing."""
    node = document
    for part in path.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(path)
    return node


# ---------------------------------------------------------------------------------------------
# senders


class HttpSender:
    """POST (PUT, GET) a notice to an SMS gateway; success is a 2xx answer (and, if configured, a JSON
    field of the answer equal to a value). One connection per request (http.client), with
    ``timeout`` on connecting and on every read; redirects are not followed."""

    name = "http"

    def __init__(self, url: str, template: str = DEFAULT_JSON_TEMPLATE, headers: Mapping[str, str] | None = None,
                 timeout: float = 10.0, *, method: str = "POST", body_format: str = "json",
                 success_field: str = "", success_value: str = "", ca_file: str = "", retry_unknown: bool = False):
        request = http_request(url, template, method, body_format)
        self.url, self.parts, self.method, self.body = url, request.parts, request.method, request.body
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.success_field, self.success_value = success_field, success_value
        self.retry_unknown = retry_unknown
        self.context = None
        if self.parts.scheme == "https":
            self.context = ssl.create_default_context(cafile=ca_file or None)

    def _target(self, values: Mapping[str, str]) -> tuple[str, bytes | None]:
        path = fill(self.parts.path or "/", values, lambda s: quote(s, safe=""))
        query = fill(self.parts.query, values, lambda s: quote(s, safe=""))
        body: bytes | None = None
        if self.method == "GET":
            query = "&".join(q for q in (query, self.body.query(values)) if q)
        else:
            body = self.body.render(values)
        return path + (f"?{query}" if query else ""), body

    def send(self, notice: Notice) -> None:
        values = notice.values()
        target, body = self._target(values)
        headers = {"User-Agent": "gridpay-notifier", "Accept": "application/json, */*",
                   **{k: fill(v, values) for k, v in self.headers.items()}}
        if body is not None:
            headers.setdefault("Content-Type", self.body.content_type)
        response, answer = exchange(self.parts, self.context, self.timeout, self.method, target, body, headers,
                                    self.retry_unknown)
        self._judge(response, answer)

    def _judge(self, response, answer: bytes) -> None:
        status = response.status
        snippet = answer[:120].decode("utf-8", "replace").strip()
        if status == 429 or 500 <= status <= 599:
            retry_after = _retry_after(response.getheader("Retry-After")) if status in (429, 503) else None
            raise SendError("transient", "http_429" if status == 429 else "http_5xx",
                            f"HTTP {status} {snippet}".strip(), retry_after)
        if 300 <= status <= 399:
            raise SendError("permanent", "http_3xx", f"HTTP {status} to {response.getheader('Location')}")
        if not 200 <= status <= 299:
            raise SendError("permanent", "http_4xx", f"HTTP {status} {snippet}".strip())
        if self.success_field:
            try:
                value = json_field(json.loads(answer), self.success_field)
            except (ValueError, KeyError):
                raise SendError("permanent", "rejected",
                                f"HTTP {status} without {self.success_field}: {snippet}") from None
            if str(value) != self.success_value:
                raise SendError("permanent", "rejected", f"{self.success_field}={value!s:.60}: {snippet}")

    def close(self) -> None:
        pass


class FileSender:
    """Appends one JSON line per notice to ``path`` (locked, so several notifiers may share the file)."""

    name = "file"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def send(self, notice: Notice) -> None:
        line = json.dumps({**asdict(notice), "at": SYSTEM_CLOCK.local().isoformat()},
                          ensure_ascii=False) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise SendError("transient", "file", describe_error(exc)) from None

    def close(self) -> None:
        pass


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - SYSTEM_CLOCK.now()).total_seconds())


def sender_from_config(cfg, environ: Mapping[str, str] | None = None, permissions: str = "refuse") -> Sender:
    """The sender a ``NotifierConfig`` names (secrets read here, never stored in the config; a
    ``secret_file`` judged as a key file with ``permissions``, config.key_files)."""
    from config.settings import read_secret

    if cfg.sender == "file":
        return FileSender(cfg.file_path)
    if cfg.sender == "aliyun":
        from engines.sms_aliyun import aliyun_sender_from_config

        return aliyun_sender_from_config(cfg, environ, permissions)
    headers = dict(cfg.http_headers)
    if cfg.http_secret_header:
        secret = read_secret("notifier.secret", cfg.secret_env, cfg.secret_file, environ, permissions=permissions)
        headers[cfg.http_secret_header] = cfg.http_secret_format.replace("{secret}", secret)
    return HttpSender(cfg.http_url, cfg.http_body, headers, cfg.http_timeout_s, method=cfg.http_method,
                      body_format=cfg.http_body_format, success_field=cfg.http_success_field,
                      success_value=cfg.http_success_value, ca_file=cfg.http_ca_file,
                      retry_unknown=cfg.http_retry_unknown)

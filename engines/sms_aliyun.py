"""Alibaba Cloud SMS (阿里云短信服务) as a notifier sender: the ``SendSms`` RPC API, signed.

The request signature is Alibaba Cloud's RPC signature, version 1.0 (HMAC-SHA1), as its
"signature mechanism" page documents it:

1. every request parameter but ``Signature`` (the common ones - ``AccessKeyId``, ``Action``,
   ``Format``, ``RegionId``, ``SignatureMethod``, ``SignatureNonce``, ``SignatureVersion``,
   ``Timestamp``, ``Version`` - and the operation's), sorted by name, names and values each
   percent-encoded as RFC 3986 (UTF-8; only ``A-Z a-z 0-9 - _ . ~`` left as they are; a space is
   ``%20``), joined ``name=value`` by ``&``: the canonicalized query string;
2. ``StringToSign = HTTPMethod & percentEncode("/") & percentEncode(canonicalized query)``;
3. ``Signature = Base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))``, sent as one more
   parameter (percent-encoded).

tests/test_notifier_aliyun.py checks this against the documentation's worked example.

The answer is JSON: ``Code`` is ``OK`` when the platform took the message (``BizId`` names it),
else the platform's error code, which decides the notice's fate (``classify``): flow control
and throttling are retried later (the notifier's backoff), platform faults likewise, anything
else - a bad number, a refused template or signature, an unknown key - is permanent: the
notice is dead with the platform's code in ``last_error``.

Each notice kind, or one of its wordings (``bill_cash``, ``payment_to_prepaid``, ...), has its
platform template (``TemplateCode``) and parameters (``TemplateParam``), from
``[notifier.aliyun.templates]``; the parameters are filled from the notice's row and the values
stored with it (``outbox.params``: config/notices.py). A token bucket keeps one notifier's
requests within ``rate_per_s`` across its send threads.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
import uuid
from typing import Callable, Mapping
from urllib.parse import quote, urlsplit

from config.clock import SYSTEM_CLOCK, Clock
from config.sms_request import fill, placeholders
from engines.sms_base import Notice, SendError, exchange
from runtime.ratelimit import TokenBucket

API_VERSION = "2017-05-25"

# Codes that mean "not now": flow control on the account, the number or the API; retried later.
THROTTLED = frozenset({"Throttling", "Throttling.User", "Throttling.Api", "Throttling.AK",
                       "isv.BUSINESS_LIMIT_CONTROL", "isv.DAY_LIMIT_CONTROL", "isv.MONTH_LIMIT_CONTROL"})
# The platform's own faults: the message was not taken; retried later.
PLATFORM_FAULTS = frozenset({"isp.SYSTEM_ERROR", "isp.GATEWAY_ERROR", "ServiceUnavailable", "InternalError",
                             "SignatureNonceUsed"})


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding of UTF-8: only letters, digits and ``-_.~`` stay as they are."""
    return quote(value, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()))


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def sign(secret: str, method: str, params: Mapping[str, str]) -> str:
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def classify(status: int, code: str, message: str) -> SendError | None:
    """What an answer means for the notice: None when the platform took it."""
    if status == 200 and code == "OK":
        return None
    detail = f"{code or f'HTTP {status}'}: {message}"[:160]
    if code in THROTTLED:
        return SendError("transient", "throttled", detail)
    if code in PLATFORM_FAULTS or (not code and status >= 500):
        return SendError("transient", "platform_error", detail)
    return SendError("permanent", "rejected", detail)


class AliyunSmsSender:
    name = "aliyun"

    def __init__(self, *, access_key_id: str, access_key_secret: str, sign_name: str,
                 templates: Mapping[str, tuple[str, Mapping[str, str]]], endpoint: str = "https://dysmsapi.aliyuncs.com/",
                 region_id: str = "cn-hangzhou", rate_per_s: float = 50.0, timeout: float = 10.0, ca_file: str = "",
                 retry_unknown: bool = False, clock: Clock = SYSTEM_CLOCK,
                 nonce: Callable[[], str] = lambda: uuid.uuid4().hex, sleep: Callable[[float], None] = time.sleep):
        self.parts = urlsplit(endpoint)
        if self.parts.scheme not in ("http", "https") or not self.parts.hostname:
            raise ValueError(f"not an http(s) URL: {endpoint!r}")
        self.key_id, self.secret, self.sign_name = access_key_id, access_key_secret, sign_name
        self.templates = dict(templates)
        self.region_id, self.timeout, self.retry_unknown = region_id, timeout, retry_unknown
        self.clock, self.nonce, self.sleep = clock, nonce, sleep
        self.bucket = TokenBucket(rate_per_s, clock)
        self.bucket_lock = threading.Lock()
        self.context = ssl.create_default_context(cafile=ca_file or None) if self.parts.scheme == "https" else None

    def request_params(self, notice: Notice) -> dict[str, str]:
        """The SendSms parameters of a notice, signature excluded: the platform template of its
        wording (``outbox.params``' ``template``), else of its kind, filled from its row and values."""
        stored = json.loads(notice.params or "{}")
        wording = stored.pop("template", None)
        chosen = wording if wording in self.templates else notice.kind
        if chosen not in self.templates:
            raise SendError("permanent", "no_template", f"no platform template for {notice.kind} notices")
        code, params = self.templates[chosen]
        values = {**notice.values(), **stored}
        missing = sorted({p for v in params.values() for p in placeholders(v)} - set(values))
        if missing:
            raise SendError("permanent", "no_template", f"{notice.kind} notice lacks {', '.join(missing)}")
        return {"AccessKeyId": self.key_id, "Action": "SendSms", "Format": "JSON", "RegionId": self.region_id,
                "SignatureMethod": "HMAC-SHA1", "SignatureNonce": self.nonce(), "SignatureVersion": "1.0",
                "Timestamp": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"), "Version": API_VERSION,
                "PhoneNumbers": notice.mobile, "SignName": self.sign_name, "TemplateCode": code,
                "TemplateParam": json.dumps({k: fill(v, values) for k, v in params.items()}, ensure_ascii=False),
                "OutId": notice.ref}

    def send(self, notice: Notice) -> None:
        params = self.request_params(notice)
        body = f"{canonical_query(params)}&Signature={percent_encode(sign(self.secret, 'POST', params))}".encode()
        self._take_token()
        status, answer = self._post(body)
        try:
            document = json.loads(answer)
            code, message = str(document.get("Code", "")), str(document.get("Message", ""))
        except (ValueError, AttributeError):
            code, message = "", answer[:120].decode("utf-8", "replace")
        error = classify(status, code, message)
        if error is not None:
            raise error

    def _take_token(self) -> None:
        while True:
            with self.bucket_lock:
                wait = self.bucket.take()
            if not wait:
                return
            self.sleep(wait)

    def _post(self, body: bytes) -> tuple[int, bytes]:
        response, answer = exchange(self.parts, self.context, self.timeout, "POST", self.parts.path or "/", body, {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Accept": "application/json",
            "User-Agent": "gridpay-notifier"}, self.retry_unknown)
        return response.status, answer

    def close(self) -> None:
        pass


def aliyun_sender_from_config(cfg, environ: Mapping[str, str] | None = None,
                              permissions: str = "refuse") -> AliyunSmsSender:
    """The sender ``[notifier.aliyun]`` describes; its AccessKey secret read here, never from the config."""
    from config.settings import read_secret

    ali = cfg.aliyun
    secret = read_secret("notifier.aliyun.access_key_secret", ali.access_key_secret_env, ali.access_key_secret_file,
                         environ, permissions=permissions)
    return AliyunSmsSender(access_key_id=ali.access_key_id, access_key_secret=secret, sign_name=ali.sign_name,
                           templates={k: (t.code, t.params) for k, t in ali.templates.items()},
                           endpoint=ali.endpoint, region_id=ali.region_id, rate_per_s=ali.rate_per_s,
                           timeout=cfg.http_timeout_s, ca_file=cfg.http_ca_file, retry_unknown=cfg.http_retry_unknown)

"""A local fake of Alibaba Cloud SMS's SendSms endpoint (no tests here): a real HTTP server on a
free port that recomputes each request's signature the way the documentation's Java example
does (``URLEncoder.encode``, then ``+`` -> ``%20``, ``*`` -> ``%2A``, ``%7E`` -> ``~``), refuses
a replayed nonce, and answers as the platform does: ``{"Code": "OK", "BizId": ...}``, or an
error code chosen by the test's script."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl, quote_plus

KEY_ID, SECRET = "LTAI5tFakeKeyId", "fake-secret-0123456789"


def java_percent_encode(value: str) -> str:
    return quote_plus(value, safe="*").replace("+", "%20").replace("*", "%2A").replace("%7E", "~")


def expected_signature(secret: str, method: str, params: dict[str, str]) -> str:
    canonical = "&".join(f"{java_percent_encode(k)}={java_percent_encode(params[k])}" for k in sorted(params))
    to_sign = f"{method}&{java_percent_encode('/')}&{java_percent_encode(canonical)}"
    return base64.b64encode(hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()).decode()


@dataclass
class Answer:
    code: str = "OK"
    message: str = "OK"
    status: int = 200


THROTTLED = Answer("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1")
BAD_NUMBER = Answer("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
TEMPLATE_REFUSED = Answer("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
SYSTEM_ERROR = Answer("isp.SYSTEM_ERROR", "系统错误")


class FakeAliyunSms:
    """``script(params, n)`` -> Answer for a correctly signed request (n: this OutId's requests so far)."""

    def __init__(self, script: Callable[[dict, int], Answer] | None = None, secret: str = SECRET):
        self.script = script or (lambda params, n: Answer())
        self.secret = secret
        self.requests: list[dict] = []        # every request's parameters, as sent
        self.accepted: list[dict] = []        # those answered OK
        self.nonces: set[str] = set()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_):
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                size = int(self.headers.get("Content-Length") or 0)
                params = dict(parse_qsl(self.rfile.read(size).decode(), keep_blank_values=True))
                answer = fake.answer(params)
                body = {"Code": answer.code, "Message": answer.message, "RequestId": "F0E1D2C3-0000-4000-8000-00000000"}
                if answer.code == "OK":
                    body["BizId"] = f"{len(fake.accepted):06d}^0"
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, params: dict) -> Answer:
        with self.lock:
            self.requests.append(dict(params))
            signature = params.pop("Signature", "")
            if params.get("AccessKeyId") != KEY_ID:
                return Answer("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
            if signature != expected_signature(self.secret, "POST", params):
                return Answer("SignatureDoesNotMatch", "Specified signature is not matched with our calculation.", 400)
            if params.get("SignatureNonce") in self.nonces:
                return Answer("SignatureNonceUsed", "Specified signature nonce was used already.", 400)
            self.nonces.add(params["SignatureNonce"])
            if (params.get("Action"), params.get("Version"), params.get("SignatureMethod"),
                    params.get("SignatureVersion"), params.get("Format")) != (
                    "SendSms", "2017-05-25", "HMAC-SHA1", "1.0", "JSON"):
                return Answer("MissingParameter", "a common parameter is missing or wrong", 400)
            n = sum(1 for p in self.requests if p.get("OutId") == params.get("OutId"))
            answer = self.script(params, n)
            if answer.code == "OK":
                self.accepted.append(params)
            return answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> "FakeAliyunSms":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

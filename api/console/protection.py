"""What a browser needs to be safe with the console: its cookies, CSRF tokens and the security headers.

Cookies. ``gp_console`` holds the operator's session token (ledger/identity/sessions.py: the same
sessions as ``POST /v1/sessions``, ended by sign-out, the idle timeout or the lifetime). It is
``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends it) and ``Secure``
whenever the request came over TLS (``api.tls_cert_file``, or HTTPS at a trusted proxy that says so
in ``X-Forwarded-Proto``); over plain HTTP (the tests on 127.0.0.1) a browser would drop a Secure
cookie, so it is left off there. ``gp_console_pre`` is a random value given with the sign-in form
(the sign-in's CSRF token is bound to it); ``gp_lang`` keeps the chosen language.

CSRF. Every form carries ``csrf_token``: an HMAC-SHA256 of the session token (before sign-in: of the
pre-sign-in cookie), keyed by that secret, so only a page that the console rendered for this browser
can know it, and any API process can check it without shared state. A POST whose token is missing or
wrong is refused (403 page), audited and counted, before anything is read or changed.

Headers. Every answer has a Content Security Policy allowing only the console's own files
(``default-src 'self'``; no inline script or style: templates never put data into a ``<script>``),
no framing, no referrer off-site, ``nosniff``, and pages are not cached.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "gp_console"
PRE_SIGNIN_COOKIE = "gp_console_pre"
LANG_COOKIE = "gp_lang"
CSRF_FIELD = "csrf_token"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def csrf_token(secret: str) -> str:
    """The form token bound to a browser's secret (its session token or pre-sign-in value)."""
    return hmac.new(secret.encode(), b"gridpay console csrf", hashlib.sha256).hexdigest()


def csrf_matches(secret: str | None, sent: str | None) -> bool:
    return bool(secret) and bool(sent) and hmac.compare_digest(csrf_token(secret), sent)


def over_tls(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", secure=over_tls(request), httponly=True,
                        samesite="strict")


def forget_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path="/console", secure=over_tls(request), httponly=True, samesite="strict")


def pre_signin_secret(request: Request) -> tuple[str, bool]:
    """(the browser's pre-sign-in value, whether it is new and must be set)."""
    found = request.cookies.get(PRE_SIGNIN_COOKIE)
    return (found, False) if found else (secrets.token_urlsafe(32), True)


def secure_headers(response: Response, page: bool) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if page:
        response.headers.setdefault("Cache-Control", "no-store")

"""The SMS gateway's request as configured (``notifier.http_*``): the placeholders, the URL and body
templates, and the checks that make a bad one a configuration error (the sender: ``engines.sms``)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from config.notices import KIND_TEMPLATES, TEMPLATES, stored_values

PLACEHOLDERS = ("id", "mobile", "text", "ref", "kind", "customer_no")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
DEFAULT_JSON_TEMPLATE = '{"mobile": "{mobile}", "text": "{text}", "ref": "{ref}"}'


def check_template(template: str, where: str) -> None:
    """Raise ValueError naming an unknown placeholder."""
    for name in _PLACEHOLDER.findall(template):
        if name not in PLACEHOLDERS:
            raise ValueError(f"{where}: unknown placeholder {{{name}}} (known: "
                             + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS) + ")")


def placeholders(template: str) -> list[str]:
    """The ``{name}`` placeholders of a template, in order."""
    return _PLACEHOLDER.findall(template)


def fill(template: str, values: Mapping[str, str], escape=lambda s: s) -> str:
    """Replace known {placeholders}; anything else in braces is left alone."""
    return _PLACEHOLDER.sub(lambda m: escape(values[m[1]]) if m[1] in values else m[0], template)


def _fill_json(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return fill(node, values)
    if isinstance(node, list):
        return [_fill_json(n, values) for n in node]
    if isinstance(node, dict):
        return {fill(k, values): _fill_json(v, values) for k, v in node.items()}
    return node


class BodyTemplate:
    """A request body built from a template.

    ``json``: the template is a JSON document; placeholders inside its strings are replaced and the
    result re-encoded, so a text with quotes or newlines stays valid JSON.
    ``form``: the template is ``a={mobile}&b={text}``; values are replaced, then form-encoded (UTF-8).
    """

    def __init__(self, template: str, fmt: str = "json"):
        if fmt not in ("json", "form"):
            raise ValueError(f"body format must be json or form, not {fmt!r}")
        check_template(template, "body template")
        self.fmt = fmt
        if fmt == "json":
            try:
                self.tree = json.loads(template)
            except json.JSONDecodeError as exc:
                raise ValueError(f"body template is not JSON: {exc}") from None
            self.content_type = "application/json; charset=utf-8"
        else:
            self.pairs = parse_qsl(template, keep_blank_values=True)
            self.content_type = "application/x-www-form-urlencoded; charset=utf-8"

    def render(self, values: Mapping[str, str]) -> bytes:
        if self.fmt == "json":
            return json.dumps(_fill_json(self.tree, values), ensure_ascii=False).encode()
        return self.query(values).encode()

    def query(self, values: Mapping[str, str]) -> str:
        if self.fmt == "json":
            raise ValueError("a GET request needs a form template")
        return urlencode([(fill(k, values), fill(v, values)) for k, v in self.pairs])


@dataclass(frozen=True)
class HttpRequest:
    """A checked request shape: where to, how, and the body template."""
    parts: SplitResult
    method: str
    body: BodyTemplate


def http_request(url: str, template: str = DEFAULT_JSON_TEMPLATE, method: str = "POST",
                 body_format: str = "json") -> HttpRequest:
    """The request shape, or ValueError saying what is wrong with the URL, method or template."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    check_template(url, "url")
    upper = method.upper()
    if upper not in ("POST", "PUT", "GET"):
        raise ValueError(f"method must be POST, PUT or GET, not {method!r}")
    body = BodyTemplate(template, body_format)
    if upper == "GET" and body_format != "form":
        raise ValueError("a GET request carries its parameters as a form template (body_format = form)")
    return HttpRequest(parts, upper, body)


def platform_template_names() -> tuple[str, ...]:
    """What a platform template may be given for: a notice kind (``bill_notice``, ``payment``, ...) or
    one of the wordings (``bill_cash``, ``payment_to_prepaid``, ...: config.notices.TEMPLATES), which
    is used before its kind's."""
    return (*KIND_TEMPLATES, *(t for t in TEMPLATES if t not in KIND_TEMPLATES))


def check_platform_params(kind: str, params: Mapping[str, str], where: str, configured: Iterable[str] = ()) -> None:
    """Raise ValueError naming an unknown kind or wording, or a parameter whose value holds a
    placeholder that notice lacks: its row's fields (``PLACEHOLDERS``) and the values stored with it
    (``outbox.params``, config.notices.stored_values; ``configured``: every kind and wording given a
    platform template)."""
    if kind not in KIND_TEMPLATES and kind not in TEMPLATES:
        raise ValueError(f"{where}: no notice kind or wording {kind!r} (one of {', '.join(platform_template_names())})")
    known = PLACEHOLDERS + stored_values(kind, configured)
    for name, value in params.items():
        for placeholder in placeholders(value):
            if placeholder not in known:
                raise ValueError(f"{where}.params.{name}: unknown placeholder {{{placeholder}}} for a {kind} notice "
                                 "(known: " + ", ".join(f"{{{p}}}" for p in known) + ")")

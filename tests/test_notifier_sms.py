"""The SMS senders against a loopback gateway, and the notifier's configuration."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from config import ConfigError, load_settings
from config.sms_request import BodyTemplate
from runtime.ratelimit import Backoff
from engines.sms import FileSender, HttpSender, Notice, SendError, sender_from_config
from test_notifier_support import Reply, SmsGateway

NOTICE = Notice(7, "0140580211", "13812345678", "payment", '您好，"引号"\n第二行 & a=b', "payment:42", 0)


def send(sender, notice=NOTICE) -> SendError | None:
    try:
        sender.send(notice)
    except SendError as exc:
        return exc
    return None


def test_json_template_keeps_the_text_valid_json():
    with SmsGateway() as gw:
        template = '{"to": ["{mobile}"], "content": {"body": "{text}", "id": "gp-{id}-{ref}"}, "sign": "电力"}'
        assert send(HttpSender(gw.url, template, timeout=2)) is None
    [seen] = gw.seen
    assert seen.headers["Content-Type"].startswith("application/json")
    assert json.loads(seen.body) == {"to": ["13812345678"], "sign": "电力",
                                     "content": {"body": NOTICE.text, "id": "gp-7-payment:42"}}


def test_form_template_and_url_placeholders():
    with SmsGateway() as gw:
        sender = HttpSender(gw.url + "?account=gridpay&cust={customer_no}", "phone={mobile}&msg={text}&ref={ref}",
                            timeout=2, body_format="form", method="PUT")
        assert send(sender) is None
    [seen] = gw.seen
    assert seen.method == "PUT" and seen.query == {"account": "gridpay", "cust": "0140580211"}
    assert seen.fields == {"phone": "13812345678", "msg": NOTICE.text, "ref": "payment:42"}


def test_get_carries_the_form_in_the_query():
    with SmsGateway() as gw:
        assert send(HttpSender(gw.url, "m={mobile}&t={text}&ref={ref}", method="GET", body_format="form",
                               timeout=2)) is None
    [seen] = gw.seen
    assert seen.method == "GET" and seen.query == {"m": "13812345678", "t": NOTICE.text, "ref": "payment:42"}


@pytest.mark.parametrize("reply, kind, reason", [
    (Reply(200), None, None),
    (Reply(204, ""), None, None),
    (Reply(500, "oops"), "transient", "http_5xx"),
    (Reply(503, "", headers={"Retry-After": "30"}), "transient", "http_5xx"),
    (Reply(429), "transient", "http_429"),
    (Reply(400, '{"error": "bad"}'), "permanent", "http_4xx"),
    (Reply(404), "permanent", "http_4xx"),
    (Reply(302, "", headers={"Location": "http://elsewhere/"}), "permanent", "http_3xx"),
])
def test_answers_are_classified(reply, kind, reason):
    with SmsGateway(lambda seen, n: reply) as gw:
        error = send(HttpSender(gw.url, timeout=2))
    assert (error and error.kind, error and error.reason) == (kind, reason)
    if reply.status == 503:
        assert error.retry_after_s == 30


@pytest.mark.parametrize("body, kind", [
    ('{"result": {"code": "0"}}', None),
    ('{"result": {"code": "17", "msg": "blacklisted"}}', "permanent"),
    ('{"other": 1}', "permanent"),
    ("not json", "permanent"),
])
def test_success_field_check(body, kind):
    with SmsGateway(lambda seen, n: Reply(200, body)) as gw:
        error = send(HttpSender(gw.url, timeout=2, success_field="result.code", success_value="0"))
    assert (error and error.kind) == kind
    if error:
        assert error.reason == "rejected"


def test_no_answer_is_unknown_unless_configured():
    with SmsGateway(lambda seen, n: Reply(delay_s=1.0)) as gw:
        error = send(HttpSender(gw.url, timeout=0.2))
        assert (error.kind, error.reason) == ("unknown", "timeout")
        error = send(HttpSender(gw.url, timeout=0.2, retry_unknown=True))
        assert (error.kind, error.reason) == ("transient", "timeout")


def test_refused_connection_is_transient():
    with SmsGateway() as gw:
        url = gw.url
    error = send(HttpSender(url, timeout=1))
    assert (error.kind, error.reason) == ("transient", "connect")


def test_file_sender_appends_json_lines(tmp_path):
    path = tmp_path / "out" / "sms.jsonl"
    sender = FileSender(path)
    sender.send(NOTICE)
    sender.send(NOTICE)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 2 and lines[0]["text"] == NOTICE.text and lines[0]["mobile"] == "13812345678"


def test_file_sender_failure_is_transient(tmp_path):
    (tmp_path / "dir").mkdir()
    error = send(FileSender(tmp_path / "dir"))
    assert (error.kind, error.reason) == ("transient", "file")


@pytest.mark.parametrize("kwargs, words", [
    ({"template": '{"x": "{nope}"}'}, "unknown placeholder {nope}"),
    ({"template": "not json"}, "not JSON"),
    ({"method": "DELETE"}, "method"),
    ({"method": "GET"}, "form template"),
])
def test_bad_sender_settings(kwargs, words):
    with pytest.raises(ValueError, match=words):
        HttpSender("http://127.0.0.1:1/sms", **kwargs)
    with pytest.raises(ValueError, match="not an http"):
        HttpSender("ftp://x/")


def test_backoff_is_exponential_capped_and_jittered():
    b = Backoff(10, 100, jitter=0)
    assert [b.delay(n) for n in range(1, 7)] == [10, 20, 40, 80, 100, 100]
    assert b.delay(3, retry_after_s=300) == 100           # capped even when the gateway asks for more
    assert b.delay(1, retry_after_s=50) == 50
    jittered = Backoff(10, 100, jitter=0.5)
    values = {jittered.delay(2) for _ in range(50)}
    assert all(10 <= v <= 20 for v in values) and len(values) > 1
    assert BodyTemplate("a={text}", "form").render({"text": "x y&z"}) == b"a=x+y%26z"


# ---------------------------------------------------------------------------------------------
# configuration


def test_example_config_has_the_notifier_section():
    text = Path("config/gridpay.example.toml").read_text(encoding="utf-8")
    assert "# [notifier]" in text
    settings = load_settings("config/gridpay.example.toml", environ={})
    assert settings.notifier.sender == "file" and settings.notifier.metrics_port == 9109


def test_commented_notifier_section_is_valid(tmp_path):
    """The example's [notifier] section, uncommented, loads."""
    lines = Path("config/gridpay.example.toml").read_text(encoding="utf-8").splitlines()
    start = lines.index("# [notifier]")
    section = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        section.append(line[2:] if line.startswith("# ") else line[1:])
    body = "\n".join(section)
    assert "[notifier]" in body and "http_url" in body
    path = tmp_path / "n.toml"
    path.write_text(body, encoding="utf-8")
    cfg = load_settings(path, environ={"GRIDPAY_SMS_TOKEN": "t0ken"}).notifier
    assert cfg.sender == "http"
    sender = sender_from_config(cfg, environ={"GRIDPAY_SMS_TOKEN": "t0ken"})
    assert sender.headers["Authorization"] == "Bearer t0ken"


def test_notifier_config_from_environment(tmp_path):
    env = {"GRIDPAY_NOTIFIER__SENDER": "http", "GRIDPAY_NOTIFIER__HTTP_URL": "http://127.0.0.1:9/sms",
           "GRIDPAY_NOTIFIER__BATCH_SIZE": "7", "GRIDPAY_NOTIFIER__HTTP_HEADERS__X_KEY": "abc"}
    cfg = load_settings(environ=env).notifier
    assert (cfg.sender, cfg.batch_size, cfg.http_headers) == ("http", 7, {"x_key": "abc"})


@pytest.mark.parametrize("env, key, words", [
    ({"SENDER": "http"}, "notifier", "needs http_url"),
    ({"SENDER": "http", "HTTP_URL": "http://x/", "HTTP_BODY": '{"a": "{who}"}'}, "notifier", "{who}"),
    ({"LEASE_S": "10"}, "notifier", "lease_s"),
    ({"HTTP_SECRET_HEADER": "Authorization"}, "notifier", "secret_env"),
    ({"SENDER": "sms"}, "notifier.sender", ""),
    ({"SECRET": "x"}, "notifier", "may not be written"),
])
def test_bad_notifier_config_names_the_key(env, key, words):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={f"GRIDPAY_NOTIFIER__{k}": v for k, v in env.items()})
    assert key in str(info.value) and words in str(info.value)

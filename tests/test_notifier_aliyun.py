"""The Alibaba Cloud SMS sender (engines/sms_aliyun.py): its signature against the documentation's
worked example, and its requests against a local fake of the platform that checks every signature
and answers success, throttling or a permanent error - alone and through the notifier."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import insert

from aliyun_fake import (
    BAD_NUMBER, KEY_ID, SECRET, SYSTEM_ERROR, TEMPLATE_REFUSED, THROTTLED, Answer, FakeAliyunSms,
)
from config import ConfigError, load_settings, notices
from config.clock import ManualClock
from config.settings import Settings
from config.sms_request import check_platform_params
from engines.notifier import Notifier
from engines.sms import Notice, SendError, sender_from_config
from engines.sms_aliyun import AliyunSmsSender, sign, string_to_sign
from ledger.schema import outbox
from ledger_helpers import new_engine
from runtime.ratelimit import Backoff
from test_notifier_support import T0, rows_of

REMINDER_VALUES = {"customer_no": "0140580211", "periods": "2026年10月", "amount": "136.20", "bills": "1",
                   "due_date": "2026年10月28日", "days": "3"}
REMINDER = Notice(7, "0140580211", "13812345678", "reminder", "您好……", "reminder:0140580211:20261031", 0,
                  json.dumps(REMINDER_VALUES, ensure_ascii=False))
TEMPLATES = {"reminder": ("SMS_0000001", {"no": "{customer_no}", "amount": "{amount}", "months": "{periods}"}),
             "payment": ("SMS_0000002", {"no": "{customer_no}"})}


def sender(fake: FakeAliyunSms, clock=None, secret: str = SECRET, **kw) -> AliyunSmsSender:
    return AliyunSmsSender(access_key_id=KEY_ID, access_key_secret=secret, sign_name="广州供电局",
                           templates=TEMPLATES, endpoint=fake.url, rate_per_s=kw.pop("rate_per_s", 1000.0),
                           timeout=5, clock=clock or ManualClock(T0), **kw)


def send(s, notice=REMINDER) -> SendError | None:
    try:
        s.send(notice)
    except SendError as exc:
        return exc
    return None


def test_signature_of_the_documentation_example():
    """Alibaba Cloud's signature mechanism page: DescribeRegions with AccessKey testid / testsecret."""
    params = {"TimeStamp": "2016-02-23T12:46:24Z", "Format": "XML", "AccessKeyId": "testid",
              "Action": "DescribeRegions", "SignatureMethod": "HMAC-SHA1",
              "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf", "Version": "2014-05-26",
              "SignatureVersion": "1.0"}
    assert string_to_sign("GET", params) == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1"
        "%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0"
        "%26TimeStamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26")
    assert sign("testsecret", "GET", params) == "CT9X0VtwR86fNWSnsc6v8YGOjuE="


def test_a_reminder_goes_out_signed_with_its_template_and_values():
    with FakeAliyunSms() as fake:
        assert send(sender(fake)) is None
    [params] = fake.accepted
    assert params["PhoneNumbers"] == "13812345678" and params["SignName"] == "广州供电局"
    assert params["TemplateCode"] == "SMS_0000001" and params["OutId"] == "reminder:0140580211:20261031"
    assert json.loads(params["TemplateParam"]) == {"no": "0140580211", "amount": "136.20", "months": "2026年10月"}
    assert params["Timestamp"] == "2026-11-23T02:00:00Z" and params["RegionId"] == "cn-hangzhou"


def test_values_with_reserved_characters_are_signed_right():
    odd = Notice(8, "01*40 ~58+", "13812345678", "payment", "x", "payment:8/1&2=3", 0)
    with FakeAliyunSms() as fake:
        assert send(sender(fake), odd) is None
    assert json.loads(fake.accepted[0]["TemplateParam"]) == {"no": "01*40 ~58+"}


def test_every_request_has_a_fresh_nonce():
    with FakeAliyunSms() as fake:
        s = sender(fake)
        assert send(s) is None and send(s) is None
    assert len({p["SignatureNonce"] for p in fake.accepted}) == 2
    with FakeAliyunSms() as fake:
        error = send(sender(fake, nonce=lambda: "same"))
        error = error or send(sender(fake, nonce=lambda: "same"))
    assert (error.kind, error.reason) == ("transient", "platform_error") and "SignatureNonceUsed" in error.detail


@pytest.mark.parametrize("answer, kind, reason", [
    (THROTTLED, "transient", "throttled"),
    (Answer("Throttling.User", "Request was denied due to user flow control.", 400), "transient", "throttled"),
    (SYSTEM_ERROR, "transient", "platform_error"),
    (BAD_NUMBER, "permanent", "rejected"),
    (TEMPLATE_REFUSED, "permanent", "rejected"),
])
def test_platform_answers_are_classified(answer, kind, reason):
    with FakeAliyunSms(lambda params, n: answer) as fake:
        error = send(sender(fake))
    assert (error.kind, error.reason) == (kind, reason) and error.detail.startswith(answer.code)


def test_a_wrong_secret_is_refused_by_the_platform_for_good():
    with FakeAliyunSms() as fake:
        error = send(sender(fake, secret="not-the-secret"))
    assert (error.kind, error.reason) == ("permanent", "rejected") and error.detail.startswith("SignatureDoesNotMatch")
    assert fake.accepted == []


def test_a_kind_without_template_or_a_missing_value_is_dead_without_a_request():
    with FakeAliyunSms() as fake:
        no_kind = send(sender(fake), Notice(9, "01", "138", "debit_ok", "t", "debit_ok:1", 0))
        no_values = send(sender(fake), Notice(9, "01", "138", "reminder", "t", "reminder:01:20261031", 0))
    assert (no_kind.kind, no_kind.reason) == ("permanent", "no_template")
    assert no_values.reason == "no_template" and "amount, periods" in no_values.detail
    assert fake.requests == []


def notice_of(kind: str, sms: notices.Sms, n: int = 1) -> Notice:
    """The outbox row a ledger writer makes for ``sms``, as the notifier hands it to a sender."""
    row = notices.outbox_row(sms.values["customer_no"], "13812345678", kind, f"{kind}:{n}", sms, T0)
    return Notice(n, row["customer_no"], row["mobile"], row["kind"], row["text"], row["ref"], 0, row["params"])


def test_every_notice_kind_carries_the_values_its_platform_template_needs():
    """Each kind of notice the outbox holds fills a platform template from the values it stored
    (outbox.params), as reminders do: amounts in yuan, months and dates as its text has them, the
    customer masked; a wording's own template goes before its kind's (a bill of a debited customer
    names its account's tail)."""
    due = date(2026, 11, 20)
    written = {
        "bill_notice": [notices.bill_notice("0140580211", "202610", 37_535, due),
                        notices.bill_notice("0140580211", "202610", 37_535, due, "D", "6222000012345678"),
                        notices.bill_paid_from_prepaid("0140580211", "202610", 37_535)],
        "payment": [notices.payment_received("0140580211", ["202610"], 37_535),
                    notices.payment_received("0140580211", [], 37_535, 100_000)],
        "reversal": [notices.payment_reversed("0140580211", 37_535)],
        "debit_ok": [notices.debit_succeeded("0140580211", ["202610"], 37_535)],
        "debit_failed": [notices.debit_failed("0140580211", ["202610"], 37_535, "51")],
        "reminder": [notices.reminder(notices.reminder_values("0140580211", ["202610"], 37_535, 1, due, 3))],
    }
    assert set(written) == set(notices.KIND_TEMPLATES)
    own = {"bill_debit": ("SMS_DEBIT", {"tail": "{account_tail}", "due": "{due_date}", "no": "{customer_masked}"})}
    templates = {kind: (f"SMS_{n}", {name: f"{{{name}}}" for name in notices.stored_values(kind, own)})
                 for n, kind in enumerate(notices.KIND_TEMPLATES)} | own
    for kind, template in templates.items():
        check_platform_params(kind, template[1], f"aliyun.templates.{kind}", templates)
    with FakeAliyunSms() as fake:
        s = AliyunSmsSender(access_key_id=KEY_ID, access_key_secret=SECRET, sign_name="广州供电局", templates=templates,
                            endpoint=fake.url, rate_per_s=1000.0, timeout=5, clock=ManualClock(T0))
        for n, (kind, smses) in enumerate(written.items()):
            for sms in smses:
                assert send(s, notice_of(kind, sms, n)) is None, (kind, sms.template)
    sent = [(p["TemplateCode"], json.loads(p["TemplateParam"])) for p in fake.accepted]
    assert len(sent) == 9
    for code, values in sent:
        assert values.get("amount", "375.35") == "375.35" and values.get("no", "******0211") == "******0211", values
        assert values.get("customer_masked", "******0211") == "******0211"
    assert ("SMS_DEBIT", {"tail": "5678", "due": "2026年11月20日", "no": "******0211"}) in sent
    assert (templates["bill_notice"][0], {"customer_no": "0140580211", "periods": "2026年10月", "amount": "375.35",
                                          "customer_masked": "******0211"}) in sent
    reminder = next(v for c, v in sent if c == templates["reminder"][0])
    assert (reminder["due_date"], reminder["days"], reminder["bills"]) == ("2026年11月20日", "3", "1")


def test_the_rate_limit_spaces_requests():
    clock = ManualClock(T0)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    with FakeAliyunSms() as fake:
        s = sender(fake, clock, rate_per_s=2.0, sleep=sleep)
        for _ in range(3):
            assert send(s) is None
    assert waits == [0.5, 0.5] and len(fake.accepted) == 3


# ---------------------------------------------------------------------------------------------
# through the notifier, against a real database


@pytest.fixture
def engine(sqlite_url):
    engine = new_engine(sqlite_url)
    yield engine
    engine.dispose()


def enqueue(engine, *refs: str) -> None:
    rows = [{"customer_no": "0140580211", "mobile": "13812345678", "kind": "reminder", "ref": ref, "text": "t",
             "state": "pending", "attempts": 0, "next_attempt_at": T0, "created_at": T0,
             "params": REMINDER.params} for ref in refs]
    with engine.begin() as conn:
        conn.execute(insert(outbox), rows)


def test_through_the_notifier_throttled_is_retried_later_and_a_bad_number_is_dead(engine):
    def script(params, n):
        if params["OutId"] == "reminder:bad":
            return BAD_NUMBER
        return THROTTLED if n == 1 else Answer()

    clock = ManualClock(T0)
    enqueue(engine, "reminder:ok", "reminder:bad")
    with FakeAliyunSms(script) as fake:
        n = Notifier(engine, sender(fake, clock), name="n1", concurrency=1, backoff=Backoff(30, 3600, jitter=0),
                     clock=clock)
        first = n.run_once()
        rows = {r["ref"]: r for r in rows_of(engine).values()}
        assert (first.retried, first.dead) == (1, 1)
        assert rows["reminder:bad"]["state"] == "dead"
        assert rows["reminder:bad"]["last_error"].startswith("rejected: isv.MOBILE_NUMBER_ILLEGAL")
        assert rows["reminder:ok"]["state"] == "pending" and "isv.BUSINESS_LIMIT_CONTROL" in rows["reminder:ok"]["last_error"]
        assert n.run_once().claimed == 0                   # not before its backoff
        clock.advance(30)
        assert n.run_once().sent == 1
    assert [p["OutId"] for p in fake.accepted] == ["reminder:ok"]
    assert {r["ref"]: r["state"] for r in rows_of(engine).values()} == {"reminder:ok": "sent", "reminder:bad": "dead"}


# ---------------------------------------------------------------------------------------------
# configuration


def aliyun_settings(tmp_path, **aliyun) -> str:
    tree = {"sender": "aliyun", "aliyun": {"access_key_id": KEY_ID, "sign_name": "广州供电局",
                                           "access_key_secret_env": "TEST_ALIYUN_SECRET",
                                           "templates": {"reminder": {"code": "SMS_1", "params": {"a": "{amount}"}}},
                                           **aliyun}}
    path = tmp_path / "gridpay.toml"
    path.write_text(toml_of({"notifier": tree}), encoding="utf-8")
    return str(path)


def toml_of(tree: dict) -> str:
    """Each top-level key a table, nested ones inline (JSON strings are TOML basic strings)."""
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v, ensure_ascii=False)

    return "".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
                   for name, table in tree.items())


def test_config_gives_a_sender_whose_secret_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_ALIYUN_SECRET", SECRET)
    settings = load_settings(aliyun_settings(tmp_path, endpoint="http://127.0.0.1:9/"))
    s = sender_from_config(settings.notifier)
    assert (s.name, s.secret, s.templates["reminder"][0]) == ("aliyun", SECRET, "SMS_1")
    monkeypatch.delenv("TEST_ALIYUN_SECRET")
    with pytest.raises(ConfigError, match="TEST_ALIYUN_SECRET is not set"):
        sender_from_config(settings.notifier)


@pytest.mark.parametrize("aliyun, problem", [
    ({"access_key_secret_env": ""}, "access_key_secret_env or aliyun.access_key_secret_file"),
    ({"sign_name": ""}, "needs aliyun.access_key_id, aliyun.sign_name"),
    ({"templates": {"payment": {"code": "SMS_2", "params": {"a": "{prepaid}"}}}}, "unknown placeholder {prepaid}"),
    ({"templates": {"bill_notice": {"code": "SMS_2", "params": {"d": "{due_date}"}}}}, "unknown placeholder {due_date}"),
    ({"templates": {"bill": {"code": "SMS_2", "params": {}}}}, "no notice kind or wording 'bill'"),
    ({"access_key_secret": "x"}, "access_key_secret"),
])
def test_bad_configurations_are_refused(tmp_path, aliyun, problem):
    with pytest.raises(ConfigError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        load_settings(aliyun_settings(tmp_path, **aliyun))


def test_defaults_send_nothing_anywhere():
    assert Settings().notifier.sender == "file"


def commented_block(first_line: str, before: int = 0) -> str:
    """The commented block of config/gridpay.example.toml that holds ``first_line`` (starting
    ``before`` lines above it), uncommented."""
    lines = (Path(__file__).resolve().parent.parent / "config" / "gridpay.example.toml").read_text(
        encoding="utf-8").splitlines()
    start = lines.index(first_line) - before
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    return "\n".join(block) + "\n"


def test_the_examples_aliyun_block_loads(tmp_path):
    path = tmp_path / "aliyun.toml"
    path.write_text(commented_block("# [notifier.aliyun]", before=2), encoding="utf-8")
    cfg = load_settings(path, environ={}).notifier
    assert cfg.sender == "aliyun" and cfg.aliyun.templates["reminder"].params["amount"] == "{amount}"
    s = sender_from_config(cfg, environ={"GRIDPAY_ALIYUN_SMS_SECRET": SECRET})
    assert s.request_params(REMINDER)["TemplateCode"] == "SMS_000000001"


def test_the_examples_reminders_block_loads(tmp_path):
    path = tmp_path / "reminders.toml"
    path.write_text(commented_block("# [reminders]"), encoding="utf-8")
    assert load_settings(path, environ={}).reminders == Settings().reminders
    site = Path(__file__).resolve().parent.parent / "config" / "site.example.toml"
    assert load_settings(site, environ={}).reminders.enabled

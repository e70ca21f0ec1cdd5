"""SMS notice texts: every notice's template, in the utility's wording, and outbox rows for them.

Example of the house style: 您好，您(0140580211)2026年10月的电费为375.35元已缴，谢谢。

``TEMPLATES`` is the one table of notice texts. A template is a ``str.format`` text whose
placeholders (``{customer_no}``, ``{amount}``, ...) are the ones its notice provides; every built-in
template ends with ``{signature}``, empty unless the site names one. A site changes any template
and the signature in its configuration (``[notices]``, ``config.settings.NoticesConfig``);
``configure`` installs them for the process (``config.load_settings`` calls it, and the ledger's
worker processes are handed their parent's, see ``runtime.worker_process``).

The bill notice has three wordings, after the customer's collection type (docs/spec/BILLING-FILES.md):
``C`` pays at counters (asked to pay), ``B`` the bank withholds on its own mandate (asked to keep
funds in the bank), ``D`` the utility debits the account of an agreement (asked to keep funds in
that account, named by its last four characters). An empty collection type is ``D`` when the
customer has an active agreement at the time the notice is written, else ``C`` (``collection_type``);
a ``D`` customer without an active agreement has no account to name and gets the bank wording.

Every notice function returns an ``Sms``: its text, the template it was worded by and its values
(the template's placeholders but the signature, plus ``customer_masked``). ``outbox_row`` stores
the values as JSON in ``outbox.params`` with the template's name, so an SMS platform that sends
only its own approved templates (Alibaba Cloud: engines/sms_aliyun.py) fills them from the same
values the text was: amounts in yuan, months and dates as the text has them.
"""
from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Iterable, Mapping

from config import money

DEBIT_FAILURE_REASONS = {
    "51": "账户余额不足",
    "14": "账户信息有误",
    "57": "账户状态异常",
    "61": "超出扣款限额",
}

# outbox.text holds 500 characters: a template, the signature and the values (a payment may name
# a year of months) stay below that
MAX_TEMPLATE = 280
MAX_SIGNATURE = 40
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

PLACEHOLDERS = {
    "customer_no": "the customer number",
    "periods": "the billing month(s), e.g. `2026年10月` or `2026年9月、2026年10月`",
    "amount": "the amount in yuan, e.g. `136.20`",
    "due_date": "the due date, e.g. `2026年11月20日`",
    "account_tail": "the last four characters of the debit agreement's account number",
    "prepaid": "the prepaid balance after the payment, in yuan",
    "reason": "why the bank declined the debit, from its response code",
    "bills": "how many bills are overdue",
    "days": "days since the earliest overdue bill's due date",
    "signature": "the site's signature (`notices.signature`; empty by default)",
}
# a value every notice carries for a platform's template, beside its template's placeholders
CUSTOMER_MASKED = "customer_masked"


@dataclass(frozen=True)
class Template:
    text: str
    placeholders: tuple[str, ...]   # the ones this notice provides
    description: str


_BILL = ("customer_no", "periods", "amount", "due_date", "signature")
_PAID = ("customer_no", "periods", "amount", "signature")

TEMPLATES: dict[str, Template] = {
    "bill_cash": Template(
        "您好，您({customer_no}){periods}的电费为{amount}元，请于{due_date}前缴纳，谢谢。{signature}", _BILL,
        "A new bill of a customer who pays at counters (collection type C, or empty without an active "
        "agreement): asked to pay by the due date."),
    "bill_bank": Template(
        "您好，您({customer_no}){periods}的电费为{amount}元，将由银行从您的账户划扣，请于{due_date}前在账户中"
        "存足款项，谢谢。{signature}", _BILL,
        "A new bill of a customer whose bank withholds on its own mandate (collection type B, 银行划扣; also D "
        "without an active agreement): asked to keep funds in the bank."),
    "bill_debit": Template(
        "您好，您({customer_no}){periods}的电费为{amount}元，将从您尾号{account_tail}的账户扣缴，请于{due_date}前"
        "在该账户中存足款项，谢谢。{signature}", (*_BILL, "account_tail"),
        "A new bill of a customer debited under an agreement (collection type D, or empty with an active "
        "agreement, 借记): asked to keep funds in the agreement's account."),
    "bill_paid_from_prepaid": Template(
        "您好，您({customer_no}){periods}的电费为{amount}元已缴，谢谢。{signature}", _PAID,
        "A new bill paid at once from the customer's prepaid balance (at import or correction)."),
    "payment": Template(
        "您好，您({customer_no}){periods}的电费为{amount}元已缴，谢谢。{signature}", _PAID,
        "A payment (at a bank's counter, or added by reconciliation) that paid bills."),
    "payment_to_prepaid": Template(
        "您好，您({customer_no})预存电费{amount}元已到账，当前预存余额{prepaid}元，谢谢。{signature}",
        ("customer_no", "amount", "prepaid", "signature"),
        "A payment (at a bank's counter, or added by reconciliation) that found no bill to pay: it went to the "
        "prepaid balance."),
    "reversal": Template(
        "您好，您({customer_no})缴纳的电费{amount}元已被银行冲正，如有疑问请联系供电营业厅，谢谢。{signature}",
        ("customer_no", "amount", "signature"),
        "A payment reversed by the bank (or by reconciliation)."),
    "debit_ok": Template(
        "您好，您({customer_no}){periods}的电费{amount}元已从您的银行账户代扣成功，谢谢。{signature}", _PAID,
        "A direct debit the bank approved."),
    "debit_failed": Template(
        "您好，您({customer_no}){periods}的电费{amount}元代扣未成功（{reason}），请及时缴纳，谢谢。{signature}",
        (*_PAID, "reason"),
        "A direct debit the bank declined."),
    "reminder": Template(
        "您好，您({customer_no}){periods}的电费共{amount}元已逾期{days}天未缴，请尽快到供电营业厅或银行网点缴纳，"
        "如已缴纳请忽略。{signature}",
        ("customer_no", "periods", "amount", "bills", "due_date", "days", "signature"),
        "An overdue reminder (`[reminders]`): the customer's overdue bills, what they still owe on them, the "
        "earliest due date and the days since."),
}

BILL_TEMPLATES = {"C": "bill_cash", "B": "bill_bank", "D": "bill_debit"}
# the outbox's notice kinds and the templates each is worded by
KIND_TEMPLATES = {"bill_notice": ("bill_cash", "bill_bank", "bill_debit", "bill_paid_from_prepaid"),
                  "payment": ("payment", "payment_to_prepaid"), "reversal": ("reversal",), "debit_ok": ("debit_ok",),
                  "debit_failed": ("debit_failed",), "reminder": ("reminder",)}


def worded_values(wording: str) -> tuple[str, ...]:
    """The values a notice of this wording stores with its row (``outbox.params``): its template's
    placeholders but the signature, and ``customer_masked``."""
    return tuple(p for p in TEMPLATES[wording].placeholders if p != "signature") + (CUSTOMER_MASKED,)


def stored_values(name: str, configured: Iterable[str] = ()) -> tuple[str, ...]:
    """The values a platform template given for ``name`` can rely on. For a wording, its own; for a
    kind, those of every wording of the kind that falls back to it: each wording but those with a
    platform template of their own among ``configured`` (a wording of the kind's name is its own)."""
    if name not in KIND_TEMPLATES:
        return worded_values(name)
    wordings = KIND_TEMPLATES[name]
    falling = [w for w in wordings if w == name or w not in configured] or [wordings[0]]
    shared = set.intersection(*(set(worded_values(w)) for w in falling))
    return tuple(p for p in worded_values(falling[0]) if p in shared)


def masked(customer_no: str) -> str:
    """A customer number for a platform's template that should not carry it whole: the last four kept."""
    return "*" * max(len(customer_no) - 4, 0) + customer_no[-4:]


# one encoder for every notice's params (json.dumps with options would make one per call: an
# import writes a notice per bill)
_PARAMS_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class Sms:
    """A notice: its text, the template it was worded by and that template's values."""
    text: str
    template: str
    values: dict[str, str] = field(default_factory=dict)

    @property
    def params(self) -> str:
        """``outbox.params``: the template's name and the values, as JSON."""
        return _PARAMS_JSON.encode({"template": self.template, **self.values,
                                    CUSTOMER_MASKED: masked(self.values["customer_no"])})


def template_problem(name: str, text: str) -> str | None:
    """Why ``text`` cannot be the template ``name`` (None when it can)."""
    if name not in TEMPLATES:
        return f"no notice template {name!r} (one of {', '.join(TEMPLATES)})"
    if not text.strip():
        return "empty"
    allowed = TEMPLATES[name].placeholders
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"not a template ({exc}); write a brace as {{{{ or }}}}"
    for _, field, spec, conversion in fields:
        if field is None:
            continue
        if spec or conversion or not field.isidentifier():
            return f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}: only " \
                   f"plain {{name}} placeholders are allowed"
        if field not in allowed:
            return f"unknown placeholder {{{field}}}; this notice has {' '.join('{' + p + '}' for p in allowed)}"
    if len(text) > MAX_TEMPLATE:
        return f"{len(text)} characters, at most {MAX_TEMPLATE}"
    return None


class Wording:
    """The templates in force: the built-in ones with a site's overrides, and its signature."""

    def __init__(self, templates: Mapping[str, str] | None = None, signature: str = ""):
        texts = {name: t.text for name, t in TEMPLATES.items()}
        for name, text in (templates or {}).items():
            problem = template_problem(name, text)
            if problem:
                raise ValueError(f"notice template {name}: {problem}")
            texts[name] = text
        if len(signature) > MAX_SIGNATURE or CONTROL.search(signature):
            raise ValueError(f"notice signature {signature!r}: at most {MAX_SIGNATURE} characters, no control "
                             f"characters")
        self.texts, self.signature = texts, signature
        self.overrides = {name: text for name, text in texts.items() if text != TEMPLATES[name].text}
        self.bill = {kind: _compiled(texts[name], signature) for kind, name in BILL_TEMPLATES.items()}

    def render(self, name: str, **values) -> Sms:
        return Sms(self.texts[name].format(signature=self.signature, **values), name, values)


def _compiled(text: str, signature: str):
    """A bill template as a function of its values (an import writes a notice per bill; this is
    a third of ``str.format``'s time). The text is a checked template: its fields are names of
    ``PLACEHOLDERS`` and its literal parts go in as ``repr``s."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(text):
        if literal:
            parts.append(repr(literal))
        if field is not None:
            parts.append(repr(signature) if field == "signature" else field)
    body = " + ".join(parts) or "''"
    return eval(f"lambda customer_no, periods, amount, due_date, account_tail: {body}")  # noqa: S307


_wording = Wording()


def configure(templates: Mapping[str, str] | None = None, signature: str = "") -> None:
    """Use these templates (by name; the others stay built-in) and signature from now on, in this process."""
    global _wording
    _wording = Wording(templates, signature)


def current() -> dict:
    """The wording in force, as ``configure``'s keyword arguments (for a worker process)."""
    return {"templates": dict(_wording.overrides), "signature": _wording.signature}


def yuan(fen: int) -> str:
    """An SMS amount: yuan ungrouped (``136.20``, ``12345.60``), config/money.py's formatter."""
    return money.yuan(fen, grouped=False)


def month(period: str) -> str:
    return f"{period[:4]}年{int(period[4:6])}月"


def periods_text(periods: list[str]) -> str:
    return "、".join(month(p) for p in sorted(set(periods)))


def collection_type(given: str | None, active_account: str | None) -> str:
    """The collection type a notice follows: the one the billing system gave, else D when the
    customer has an active agreement (its account, when known) and C when not."""
    return given or ("D" if active_account else "C")


def bill_notice(customer_no: str, period: str, amount_fen: int, due: date, collection: str | None = None,
                account_no: str | None = None) -> Sms:
    """A new bill's notice, worded after the customer's collection type (``collection``, as stored:
    None for the default) and the account of its active agreement (``account_no``, if any)."""
    kind = collection_type(collection, account_no)
    if kind == "D" and not account_no:
        kind = "B"   # no account to name
    values = {"customer_no": customer_no, "periods": month(period), "amount": yuan(amount_fen),
              "due_date": f"{due.year}年{due.month}月{due.day}日"}
    if kind == "D":
        values["account_tail"] = account_no[-4:]
    text = _wording.bill[kind](customer_no, values["periods"], values["amount"], values["due_date"],
                               values.get("account_tail", ""))
    return Sms(text, BILL_TEMPLATES[kind], values)


def bill_paid_from_prepaid(customer_no: str, period: str, amount_fen: int) -> Sms:
    return _wording.render("bill_paid_from_prepaid", customer_no=customer_no, periods=month(period),
                           amount=yuan(amount_fen))


def payment_received(customer_no: str, periods: list[str], amount_fen: int, prepaid_fen: int = 0) -> Sms:
    if not periods:
        return _wording.render("payment_to_prepaid", customer_no=customer_no, amount=yuan(amount_fen),
                               prepaid=yuan(prepaid_fen))
    return _wording.render("payment", customer_no=customer_no, periods=periods_text(periods), amount=yuan(amount_fen))


def payment_reversed(customer_no: str, amount_fen: int) -> Sms:
    return _wording.render("reversal", customer_no=customer_no, amount=yuan(amount_fen))


def debit_succeeded(customer_no: str, periods: list[str], amount_fen: int) -> Sms:
    return _wording.render("debit_ok", customer_no=customer_no, periods=periods_text(periods), amount=yuan(amount_fen))


def debit_failed(customer_no: str, periods: list[str], amount_fen: int, response_code: str) -> Sms:
    return _wording.render("debit_failed", customer_no=customer_no, periods=periods_text(periods),
                           amount=yuan(amount_fen), reason=DEBIT_FAILURE_REASONS.get(response_code, "银行扣款失败"))


MAX_LISTED_PERIODS = 6


def reminder_values(customer_no: str, periods: list[str], amount_fen: int, bills: int, due: date,
                    days: int) -> dict[str, str]:
    """An overdue reminder's placeholders (also stored with its outbox row, for platform templates).
    More than ``MAX_LISTED_PERIODS`` months are named as a span, so a long arrears stays one SMS."""
    months = sorted(set(periods))
    named = periods_text(months) if len(months) <= MAX_LISTED_PERIODS else f"{month(months[0])}至{month(months[-1])}"
    return {"customer_no": customer_no, "periods": named, "amount": yuan(amount_fen), "bills": str(bills),
            "due_date": f"{due.year}年{due.month}月{due.day}日", "days": str(days)}


def reminder(values: Mapping[str, str]) -> Sms:
    return _wording.render("reminder", **values)


def outbox_row(customer_no: str, mobile: str | None, kind: str, ref: str, sms: Sms,
               at: datetime) -> dict | None:
    """The outbox row for a notice (its text, and its template and values as ``params``), or None
    when the customer has no mobile number."""
    if not mobile:
        return None
    return {"customer_no": customer_no, "mobile": mobile, "kind": kind, "ref": ref, "text": sms.text,
            "params": sms.params, "state": "pending", "attempts": 0, "next_attempt_at": at, "created_at": at}

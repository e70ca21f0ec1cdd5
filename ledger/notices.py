"""SMS notice texts, in the utility's wording, and outbox rows for them.

Example of the house style: 您好，您(0140580211)2026年10月的电费为375.35元已缴，谢谢。
"""
from __future__ import annotations

from datetime import date, datetime

DEBIT_FAILURE_REASONS = {
    "51": "账户余额不足",
    "14": "账户信息有误",
    "57": "账户状态异常",
    "61": "超出扣款限额",
}


def yuan(fen: int) -> str:
    assert isinstance(fen, int), "money is integer fen"
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


def month(period: str) -> str:
    return f"{period[:4]}年{int(period[4:6])}月"


def periods_text(periods: list[str]) -> str:
    return "、".join(month(p) for p in sorted(set(periods)))


def bill_notice(customer_no: str, period: str, amount_fen: int, due: date) -> str:
    return (f"您好，您({customer_no}){month(period)}的电费为{yuan(amount_fen)}元，"
            f"请于{due.year}年{due.month}月{due.day}日前缴纳，谢谢。")


def payment_received(customer_no: str, periods: list[str], amount_fen: int, prepaid_fen: int = 0) -> str:
    if not periods:
        return f"您好，您({customer_no})预存电费{yuan(amount_fen)}元已到账，当前预存余额{yuan(prepaid_fen)}元，谢谢。"
    return f"您好，您({customer_no}){periods_text(periods)}的电费为{yuan(amount_fen)}元已缴，谢谢。"


def payment_reversed(customer_no: str, amount_fen: int) -> str:
    return f"您好，您({customer_no})缴纳的电费{yuan(amount_fen)}元已被银行冲正，如有疑问请联系供电营业厅，谢谢。"


def debit_succeeded(customer_no: str, periods: list[str], amount_fen: int) -> str:
    return f"您好，您({customer_no}){periods_text(periods)}的电费{yuan(amount_fen)}元已从您的银行账户代扣成功，谢谢。"


def debit_failed(customer_no: str, periods: list[str], amount_fen: int, response_code: str) -> str:
    reason = DEBIT_FAILURE_REASONS.get(response_code, "银行扣款失败")
    return (f"您好，您({customer_no}){periods_text(periods)}的电费{yuan(amount_fen)}元代扣未成功"
            f"（{reason}），请及时缴纳，谢谢。")


def outbox_row(customer_no: str, mobile: str | None, kind: str, ref: str, text: str,
               at: datetime) -> dict | None:
    """The outbox row for a notice, or None when the customer has no mobile number."""
    if not mobile:
        return None
    return {"customer_no": customer_no, "mobile": mobile, "kind": kind, "ref": ref, "text": text,
            "state": "pending", "attempts": 0, "next_attempt_at": at, "created_at": at}

"""What an exception is, in the report's language and in yuan, from the item's own fields.

The reconciler stores a note with each item (``recon_items.detail``: English, amounts in fen, for
logs and machines; the CSV keeps it). The printed report says the same from the item's fields, so
that a page reads in one language and one unit; an item whose note says more than its fields do
(a debit to match by hand, a remittance whose run is missing or taken) gets that said as well.
"""
from __future__ import annotations

import re

from ledger.reports.cells import yuan as grouped_yuan

WORDS: dict[str, tuple[str, str]] = {
    "bank_only": ("银行文件有（{bank_status}），账务无", "in the bank's file ({bank_status}), not in the ledger"),
    "bank_only_declined": ("账务记录扣款 {debit} 为失败或冲正，银行为 {bank_status}",
                           "the ledger recorded debit {debit} as declined or reversed; the bank shows {bank_status}"),
    "ledger_only": ("账务有（{ledger_status}），银行文件无", "in the ledger ({ledger_status}), not in the bank's file"),
    "amount_differs": ("银行 {bank} 元，账务 {ledger} 元", "bank {bank} yuan, ledger {ledger} yuan"),
    "status_differs_R": ("仅银行已冲正", "reversed at the bank only"),
    "status_differs_S": ("仅账务已冲正", "reversed in the ledger only"),
    "debit_S": ("扣款 {debit} 结果未明；银行文件：成功", "debit {debit} of unknown outcome; the bank's file: succeeded"),
    "debit_R": ("扣款 {debit} 结果未明；银行文件：已冲正", "debit {debit} of unknown outcome; the bank's file: reversed"),
    "debit_None": ("扣款 {debit} 结果未明；银行文件无此笔：未扣款", "debit {debit} of unknown outcome; not in the bank's file: "
                                                        "it did not happen"),
    "debit_amounts": ("（银行 {bank} 元，扣款 {ledger} 元）", " (bank {bank} yuan, debit {ledger} yuan)"),
    "by_hand": ("；需手工匹配", "; match it by hand"),
    "remittance_amounts": ("{bank_name} {day} 划款：到账 {bank} 元，应划 {ledger} 元，差额 {diff} 元",
                           "remittance of {bank_name} for {day}: credit {bank} yuan, expected {ledger} yuan, "
                           "difference {diff} yuan"),
    "remittance_no_run": ("{bank_name} 划款：该日银行文件尚未对账", "remittance of {bank_name}: that date's bank file "
                                                            "is not reconciled yet"),
    "remittance_taken": ("{bank_name} 划款：该日已与另一笔划款匹配", "remittance of {bank_name}: that date is already "
                                                           "matched to another remittance"),
    "cheque": ("支票 {cheque}：未找到金额相符的未匹配支票缴费", "cheque {cheque}: no unmatched cheque payments of this amount"),
    "reversal": ("冲正（原笔不在本对账单）", "a reversal of an entry not in this statement"),
    "manual": ("无划款参考号、支票或缴费可自动匹配：待手工匹配", "no remittance reference, cheque or payment matched: "
                                                    "for manual matching"),
}


def yuan(fen) -> str:
    return "" if fen is None else grouped_yuan(int(fen))


def _w(lang: str, key: str, **values) -> str:
    return WORDS[key][0 if lang == "zh" else 1].format(**values)


def describe(item: dict, lang: str, bank_name: str = "") -> str:
    """The item's exception in words (see the module docstring); the stored note for a kind not known here."""
    kind, note = item["kind"], item["detail"] or ""
    bank, ledger = yuan(item["bank_amount"]), yuan(item["ledger_amount"])
    if kind == "bank_only":
        declined = re.match(r"the ledger recorded debit (\d+)", note)
        if declined:
            return _w(lang, "bank_only_declined", debit=declined.group(1), bank_status=item["bank_status"])
        return _w(lang, "bank_only", bank_status=item["bank_status"])
    if kind == "ledger_only":
        return _w(lang, "ledger_only", ledger_status=item["ledger_status"] or "")
    if kind == "amount_differs":
        return _w(lang, "amount_differs", bank=bank, ledger=ledger)
    if kind == "status_differs":
        return _w(lang, f"status_differs_{item['bank_status']}")
    if kind == "debit_unknown":
        text = _w(lang, f"debit_{item['bank_status']}", debit=item["debit_id"])
        if item["bank_amount"] is not None and item["bank_amount"] != item["ledger_amount"]:
            text += _w(lang, "debit_amounts", bank=bank, ledger=ledger)
        return text + (_w(lang, "by_hand") if note.endswith("match it by hand") else "")
    if kind == "remittance":
        ref = item["reference"] or ""
        day = f"{ref[-8:-4]}-{ref[-4:-2]}-{ref[-2:]}" if len(ref) > 8 else ""
        if item["ledger_amount"] is not None and "already matched" not in note:
            return _w(lang, "remittance_amounts", bank_name=bank_name, day=day, bank=bank, ledger=ledger,
                      diff=yuan(int(item["bank_amount"]) - int(item["ledger_amount"])))
        return _w(lang, "remittance_taken" if "already matched" in note else "remittance_no_run", bank_name=bank_name)
    if kind == "cheque":
        return _w(lang, "cheque", cheque=item["cheque_no"])
    if kind == "reversal":
        return _w(lang, "reversal")
    if kind in ("credit", "debit") and note.startswith("no remittance reference"):
        return _w(lang, "manual")
    return note

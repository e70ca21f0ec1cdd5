"""One fen -> yuan formatter (config/money.py) under the reports' cells, the SMS notices and the bill
corrections' summary, each output as it was: SMS texts byte for byte."""
from __future__ import annotations

import pytest

from config import money, notices
from ledger import corrections
from ledger.reports import cells

AMOUNTS = [0, 5, 99, 100, 13_620, 123_456, 100_000_000, -150, -123_456_789]


def test_the_reports_and_the_notices_call_the_one_formatter():
    assert cells.yuan is money.yuan
    assert not hasattr(corrections, "_yuan"), "no second divmod in the corrections"
    assert all(notices.yuan(f) == money.yuan(f, grouped=False) for f in AMOUNTS)


@pytest.mark.parametrize("fen, grouped, ungrouped", [
    (0, "0.00", "0.00"), (5, "0.05", "0.05"), (13_620, "136.20", "136.20"), (123_456, "1,234.56", "1234.56"),
    (100_000_000, "1,000,000.00", "1000000.00"), (-150, "-1.50", "-1.50"), (-123_456_789, "-1,234,567.89", "-1234567.89"),
])
def test_yuan_reads_as_before(fen, grouped, ungrouped):
    assert money.yuan(fen) == grouped and money.yuan(fen, grouped=False) == ungrouped


def test_sms_texts_and_the_correction_summary_stay_byte_identical():
    assert notices.payment_reversed("0140580211", 1_234_567).text == \
        "您好，您(0140580211)缴纳的电费12345.67元已被银行冲正，如有疑问请联系供电营业厅，谢谢。"
    summary = corrections.CorrectionResult("B1", "B1R", "B1N", 123_456, False, 1_000_005).summary()
    assert summary == "bill B1 reversed by B1R, replaced by B1N; 1234.56 yuan paid on it moved to prepaid; " \
                      "prepaid balance 10000.05 yuan"


def test_money_is_integer_fen():
    for wrong in (1.5, True, "100"):
        with pytest.raises(AssertionError):
            money.yuan(wrong)

"""Checks of one line's fields, without the database."""
from __future__ import annotations

from datetime import date

from ledger.money import fits
from ledger.imports.formats import (
    LineError, _ACCOUNT_NO, _BANK_CODE, _BILL_ID, _CONTROL, _CUSTOMER_NO, _DATE, _DISTRICT, _FEN, _MOBILE, _PERIOD,
)


# ---------------------------------------------------------------------------------------------
# Checking a line's fields


def _gbk_name(value: str, column: str, line: int, errors: list[LineError], limit: int = 60) -> None:
    if not value.strip():
        errors.append(LineError(line, column, "empty"))
        return
    if _CONTROL.search(value):
        errors.append(LineError(line, column, "contains a control character"))
        return
    try:
        size = len(value.encode("gbk"))
    except UnicodeEncodeError as exc:
        errors.append(LineError(line, column, f"character {value[exc.start]!r} cannot be written in GBK"))
        return
    if size > limit:
        errors.append(LineError(line, column, f"{size} bytes in GBK, at most {limit} allowed"))


def _choice(value: str, allowed: tuple[str, ...], column: str, line: int, errors: list[LineError], what: str) -> None:
    if value not in allowed:
        errors.append(LineError(line, column, f"{value!r} is not {what}"))


def _fen(value: str, column: str, line: int, errors: list[LineError], *, positive: bool) -> int | None:
    if not _FEN.fullmatch(value):
        errors.append(LineError(line, column, f"{value!r} is not an amount in whole fen (digits only)"))
        return None
    amount = int(value)
    if positive and amount <= 0:
        errors.append(LineError(line, column, "must be greater than 0"))
        return None
    if not fits(amount):   # field 48 BI carries principal and penalty in 12 digits each
        errors.append(LineError(line, column, "more than 12 digits"))
        return None
    return amount


def _customer_no(no: str, line: int, errors: list[LineError]) -> bool:
    if _CUSTOMER_NO.fullmatch(no):
        return True
    errors.append(LineError(line, "customer_no", f"{no!r} is not 1-20 ASCII letters or digits"))
    return False


def _check_customer(line: int, row: list[str], errors: list[LineError]) -> tuple[str | None, tuple | None]:
    """(the customer_no if valid, the row's values if the whole line is): the required columns',
    then district and collection_type (None when empty) if the file has them."""
    n = len(errors)
    if len(row) == 6:
        no, name, ctype, status, prepay, mobile = row
        optional = ()
    else:
        no, name, ctype, status, prepay, mobile, *optional = row
    key = no if _customer_no(no, line, errors) else None
    _gbk_name(name, "customer_name", line, errors)
    _choice(ctype, ("R", "N"), "customer_type", line, errors, "R (resident) or N (non-resident)")
    _choice(status, ("A", "S", "C"), "status", line, errors, "A (active), S (suspended) or C (closed)")
    _choice(prepay, ("Y", "N"), "prepay_allowed", line, errors, "Y or N")
    if mobile and not _MOBILE.fullmatch(mobile):
        errors.append(LineError(line, "mobile", f"{mobile!r} is not empty or 11 digits"))
    if optional:
        if not _DISTRICT.fullmatch(optional[0]):
            errors.append(LineError(line, "district", f"{optional[0]!r} is not empty or 1-20 ASCII letters or "
                                                      f"digits"))
        if len(optional) > 1:
            _choice(optional[1], ("C", "B", "D", ""), "collection_type", line, errors,
                    "C (cash at counters), B (the bank withholds), D (debited under an agreement) or empty")
    if len(errors) != n:
        return key, None
    if not optional:
        return key, (no, name, ctype, status, prepay, mobile or None)
    if len(optional) == 1:
        return key, (no, name, ctype, status, prepay, mobile or None, optional[0] or None)
    return key, (no, name, ctype, status, prepay, mobile or None, optional[0] or None, optional[1] or None)


def _check_bill(line: int, row: list[str], errors: list[LineError]) -> tuple | None:
    """(customer_no, period, bill_id, principal, penalty, due_date as YYYY-MM-DD, category) if the
    line is good; the category is E when the file has no such column or leaves it empty."""
    n = len(errors)
    if len(row) == 6:
        no, period, bill_id, principal, penalty, due = row
        category = "E"
    else:
        no, period, bill_id, principal, penalty, due, category = row
        if category not in _CATEGORIES:
            errors.append(LineError(line, "category", f"{category!r} is not E (electricity charges), V (charges "
                                                      f"for irregular use), F (penalties for illegal use) or empty"))
        category = category or "E"
    _customer_no(no, line, errors)
    if not _PERIOD.fullmatch(period):
        errors.append(LineError(line, "period", f"{period!r} is not a month YYYYMM"))
    if not _BILL_ID.fullmatch(bill_id):
        errors.append(LineError(line, "bill_id", f"{bill_id!r} is not 1-32 ASCII letters or digits"))
    p = _fen(principal, "principal", line, errors, positive=True)
    q = _fen(penalty, "penalty", line, errors, positive=False)
    if not _DATE.fullmatch(due):
        errors.append(LineError(line, "due_date", f"{due!r} is not a date YYYY-MM-DD"))
    else:
        try:
            date.fromisoformat(due)
        except ValueError:
            errors.append(LineError(line, "due_date", f"{due!r} is not a calendar date"))
    if len(errors) != n:
        return None
    return no, period, bill_id, p, q, due, category


_CATEGORIES = frozenset(("E", "V", "F", ""))


def _check_agreement(line: int, row: list[str], errors: list[LineError]) -> tuple | None:
    """(customer_no, bank_code, account_no, account_name, status, debit_limit) if the line is good."""
    n = len(errors)
    no, bank, account, name, status, limit = row
    _customer_no(no, line, errors)
    if not _BANK_CODE.fullmatch(bank):
        errors.append(LineError(line, "bank_code", f"{bank!r} is not a bank code of 1-11 digits"))
    if not _ACCOUNT_NO.fullmatch(account):
        errors.append(LineError(line, "account_no", f"{account!r} is not 1-28 printable ASCII characters"))
    _gbk_name(name, "account_name", line, errors)
    _choice(status, ("A", "C"), "status", line, errors, "A (active) or C (cancelled)")
    debit_limit = _fen(limit, "debit_limit", line, errors, positive=False)
    if len(errors) != n:
        return None
    return no, bank, account, name, status, debit_limit


def _check_customer_item(line: int, row: list[str], errors: list[LineError]):
    key, values = _check_customer(line, row, errors)
    return None if key is None else (line, key, values)


def _check_bill_item(line: int, row: list[str], errors: list[LineError]):
    values = _check_bill(line, row, errors)
    return None if values is None else (line, values)


def _check_agreement_item(line: int, row: list[str], errors: list[LineError]):
    values = _check_agreement(line, row, errors)
    return None if values is None else (line, values)



"""The simulated bank's books: accounts, the debits it applied, reversals, and its day file (docs/spec/INTERFACE.md §7.1).

Pure state, no networking: ``BankBooks.debit`` / ``reverse`` decide exactly what a bank host
does with a direct debit and a debit reversal, and remember it, so that tests can compare the
bank's truth with the ledger (no double debit, no lost debit, every unknown reversed).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ACTIVE, CLOSED = "A", "C"


@dataclass
class Account:
    balance: int                # fen
    limit: int = 0              # largest single debit, fen; 0 = no limit
    status: str = ACTIVE        # A active, C closed


@dataclass
class AppliedDebit:
    identity: tuple[str, str, str]   # (32, 7, 11) as sent
    account: str
    amount: int
    rrn: str
    customer: str
    approval: str
    business_date: date
    reversed: bool = False


@dataclass
class Reversal:
    identity: tuple[str, str, str]   # the original's (32, 7, 11)
    reversal_identity: tuple[str, str, str]
    credited: bool                   # False when the original had not been seen (or was declined)


@dataclass
class BankBooks:
    bank_code: str
    accounts: dict[str, Account]
    business_date: date
    unknown_original_code: str = "12"   # a debit whose reversal came first
    applied: dict[tuple, AppliedDebit] = field(default_factory=dict)
    reversals: dict[tuple, Reversal] = field(default_factory=dict)
    preempted: set = field(default_factory=set)      # reversed before the original arrived
    declined: dict[tuple, str] = field(default_factory=dict)
    _approval: int = 0

    def identity(self, f32: str, f7: str, f11: str) -> tuple[str, str, str]:
        """The key of a debit: field 32 compared as a number (field 90 zero-fills it)."""
        if f32.isdigit() and self.bank_code.isdigit() and int(f32) == int(self.bank_code):
            f32 = self.bank_code
        return (f32, f7, f11)

    def debit(self, key: tuple, account_no: str, amount: int, rrn: str, customer: str,
              forced: str | None = None) -> tuple[str, str | None]:
        """Apply one direct debit; returns (response code, approval code). The caller answers a
        repeat of an answered identity from its own response cache; this is only called once."""
        if key in self.applied:
            return "00", self.applied[key].approval  # never debit twice
        code = self._decide(key, account_no, amount, forced)
        if code != "00":
            self.declined[key] = code
            return code, None
        account = self.accounts[account_no]
        account.balance -= amount
        self._approval = self._approval % 999999 + 1
        approval = f"{self._approval:06d}"
        self.applied[key] = AppliedDebit(key, account_no, amount, rrn, customer, approval, self.business_date)
        return "00", approval

    def _decide(self, key, account_no: str, amount: int, forced: str | None) -> str:
        if key in self.preempted:
            return self.unknown_original_code
        account = self.accounts.get(account_no)
        if account is None:
            return "14"
        if account.status != ACTIVE:
            return "57"
        if forced:
            return forced
        if account.limit and amount > account.limit:
            return "61"
        if account.balance < amount:
            return "51"
        return "00"

    def reverse(self, original: tuple, reversal_key: tuple, amount: int) -> str:
        """A debit reversal: credit back once; 00 in every case except an amount that is not the
        original's (13). An original never seen is remembered so that it is declined if it comes."""
        rec = self.applied.get(original)
        if rec is not None:
            if amount != rec.amount:
                return "13"
            if not rec.reversed:
                rec.reversed = True
                self.accounts[rec.account].balance += rec.amount
                self.reversals[original] = Reversal(original, reversal_key, True)
            return "00"
        if original not in self.declined:
            self.preempted.add(original)
        self.reversals.setdefault(original, Reversal(original, reversal_key, False))
        return "00"

    # --- files -------------------------------------------------------------------------------

    def day_lines(self, business_date: date | None = None) -> list[str]:
        """§7.1 lines (header first) of the debit channel for the business date."""
        bd = business_date or self.business_date
        rows = sorted((r for r in self.applied.values() if r.business_date == bd),
                      key=lambda r: (_transmission(r.identity[1], bd), r.identity[2]))
        lines = [f"D|D|{_transmission(r.identity[1], bd)}|{r.identity[2]}|{r.rrn}|{r.customer}|{r.amount}|"
                 f"{'R' if r.reversed else 'S'}|{r.approval}" for r in rows]
        total = sum(r.amount for r in rows if not r.reversed)
        return [f"H|{self.bank_code}|{bd:%Y%m%d}|{len(lines)}|{total}"] + lines

    def write_day_file(self, path: str | Path, business_date: date | None = None) -> Path:
        """Write ``{bank}_{YYYYMMDD}.txt`` (GBK, ``\\n``) into ``path`` when it is a directory,
        else to ``path`` itself; returns the file's path."""
        bd = business_date or self.business_date
        target = Path(path)
        if target.is_dir():
            target = target / f"{self.bank_code}_{bd:%Y%m%d}.txt"
        data = ("\n".join(self.day_lines(bd)) + "\n").encode("gbk")
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        return target

    # --- totals ------------------------------------------------------------------------------

    def debited_total(self) -> int:
        """Fen taken from accounts and not given back."""
        return sum(r.amount for r in self.applied.values() if not r.reversed)


def _transmission(f7: str, business_date: date) -> str:
    """Field 7 (MMDDhhmmss) with its year: the business date's, or the one before for a
    December transmission on a January business date."""
    year = business_date.year - (1 if f7[:2] == "12" and business_date.month == 1 else 0)
    return f"{year:04d}{f7}"


def load_accounts(path: str | Path) -> dict[str, Account]:
    """CSV ``account_no,balance,limit,status`` (a header line is optional; limit and status too)."""
    accounts: dict[str, Account] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            if not row or not row[0].strip() or row[0].strip().startswith("#"):
                continue
            if row[0].strip() == "account_no":
                continue
            number = row[0].strip()
            balance = int(row[1]) if len(row) > 1 and row[1].strip() else 0
            limit = int(row[2]) if len(row) > 2 and row[2].strip() else 0
            status = row[3].strip().upper() if len(row) > 3 and row[3].strip() else ACTIVE
            if status not in (ACTIVE, CLOSED):
                raise ValueError(f"{path}: account {number}: status must be A or C, got {status!r}")
            accounts[number] = Account(balance, limit, status)
    return accounts

"""What every report builder is handed: the database, the clock (local time, business dates) and the
banks' names (Chinese, and English where the configuration gives one), and the labels of codes that
reports share."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from config.clock import Clock
from ledger.reports.definition import Label
from ledger.schema import banks

def label_of(table: dict, code) -> Label | str | None:
    """A code's label (resolved in the report's language when rendered), or the code itself."""
    return table.get(code, code)


CHANNELS = {"C": Label("柜台", "counter"), "D": Label("代扣", "direct debit")}
METHODS = {"01": Label("现金", "cash"), "02": Label("转账/刷卡", "transfer/card"), "03": Label("支票", "cheque"),
           "10": Label("代扣", "direct debit")}
CUSTOMER_TYPES = {"R": Label("居民", "resident"), "N": Label("非居民", "non-resident")}
CATEGORIES = {"E": Label("电费", "electricity charges"), "V": Label("违约用电电费", "charges for irregular use"),
              "F": Label("违章追罚电费", "penalties for illegal use")}
COLLECTION_TYPES = {"C": Label("坐收", "cash at counters"), "B": Label("银行代收", "bank withholds"),
                    "D": Label("代扣", "direct debit")}
TOTAL = Label("合计", "total")   # the totals row's label
YES_NO = {True: Label("有", "yes"), False: Label("无", "no")}
# the lines a clerk signs under a report finance signs (the page prints them as a sign-off block)
SIGN_OFF = (Label("编制人：", "prepared by:"), Label("复核人：", "checked by:"), Label("财务负责人：", "approved by:"),
            Label("日期：", "date:"))


@dataclass
class ReportContext:
    engine: Engine
    clock: Clock
    bank_names: dict[str, str] = field(default_factory=dict)
    bank_names_en: dict[str, str] = field(default_factory=dict)   # banks.<code>.name_en

    def bank(self, code: str) -> str:
        """A bank as finance reads it: its name beside its code."""
        name = self.bank_names.get(code)
        return f"{code} {name}" if name else code

    def bank_name(self, code: str | None) -> Label | str:
        """A bank's name alone, in either language (English where configured, else the Chinese)."""
        name = self.bank_names.get(code or "", "")
        return Label(name, self.bank_names_en.get(code, name)) if code in self.bank_names_en else name

    def bank_named(self, code: str | None) -> Label | str:
        """A bank's name with its code in brackets: ``中国工商银行（0102）``, ``ICBC (0102)``."""
        if not code:
            return ""
        name = self.bank_name(code)
        if not name:
            return code
        return Label(f"{name('zh') if isinstance(name, Label) else name}（{code}）",
                     f"{name('en') if isinstance(name, Label) else name} ({code})")


def bank_names(engine: Engine, configured: dict | None = None) -> dict[str, str]:
    """Each bank's name: the configuration's (``banks.<code>.name``) where it gives one, else the
    ``banks`` table's."""
    with engine.connect() as conn:
        names = {code: name for code, name in conn.execute(select(banks.c.bank_code, banks.c.name)) if name}
    for code, bank in (configured or {}).items():
        if getattr(bank, "name", ""):
            names[code] = bank.name
    return names


def bank_names_en(configured: dict | None) -> dict[str, str]:
    """Each configured bank's English name (``banks.<code>.name_en``), where it has one."""
    return {code: bank.name_en for code, bank in (configured or {}).items() if getattr(bank, "name_en", "")}


def report_context(engine: Engine, clock: Clock, configured: dict | None = None) -> ReportContext:
    """The context of a site: its banks' names from the ``banks`` table and the configuration."""
    return ReportContext(engine, clock, bank_names(engine, configured), bank_names_en(configured))

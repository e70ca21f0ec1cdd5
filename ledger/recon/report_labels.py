"""The reconciliation reports' words in Chinese and English, and how a report is asked for.

``term(key, **values)``: a word of ``LABELS`` as a ``ledger.reports.definition.Label`` (both
languages; the report is rendered in one). ``ReportOptions``: the language the files are written
in (``zh`` | ``en``), the clock whose zone local times are shown in, and bank names from the
configuration (code -> (name, English name); a bank not named there is shown by its
``banks.name`` row); ``options.context(engine)`` is the report context they make.
``ReportsDir``: a reports directory carrying its options; it is
a path (``os.PathLike``), so code that only passes the directory on (the reconciliation runs)
hands the options on with it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from config.clock import SYSTEM_CLOCK, Clock
from ledger.reports.context import ReportContext, bank_names
from ledger.reports.definition import Label

LANGS = ("zh", "en")

LABELS: dict[str, tuple[str, str]] = {
    # titles and facts
    "run_title_bank": ("银行对账报告 第 {run} 批：{bank} {date}", "Reconciliation run {run}: bank {bank}, {date}"),
    "run_title_finance": ("财务对账报告 第 {run} 批：收款账户对账单", "Reconciliation run {run}: finance statement"),
    "day_title": ("{date} 各银行对账汇总", "Reconciliation of business date {date}"),
    "file": ("文件", "file"), "format": ("格式", "format"), "sha256": ("SHA-256", "SHA-256"),
    "run_by": ("对账人", "run by"), "finished": ("完成时间", "finished"), "printed": ("打印时间", "printed"),
    "state": ("状态", "state"), "all_matched": ("全部相符", "everything matched"),
    "n_open": ("{n} 笔差异未处理", "{n} open exception(s)"),
    "amount_unit": ("金额单位", "amounts in"), "yuan": ("元", "yuan"),
    # sections
    "bridge": ("银行合计至账务合计调节表", "Bridge from the bank's total to the ledger's total"),
    "bridge_finance": ("对账单合计至实收调节表", "Bridge from the statement to the collections"),
    "since": ("对账后账务变动", "The ledger since the run"),
    "differences": ("差异分类", "Differences by kind"),
    "collections_by_kind": ("实收构成", "Collections by kind"),
    "chart_differences": ("差异金额（元）", "Differences in yuan"),
    "chart_totals": ("合计金额（元）", "Totals in yuan"),
    "chart_entries": ("对账单金额（元）", "Statement amounts in yuan"),
    "chart_banks": ("各银行金额（元）", "Amounts by bank in yuan"),
    "channels": ("渠道", "Channels"), "exceptions": ("差异明细 ({n})", "Exceptions ({n})"),
    "resolved_as": ("{how} · {by}: {note}", "{how} · {by}: {note}"),
    "entries": ("对账单明细", "Statement entries"), "banks": ("各银行", "By bank"),
    "none": ("无", "none"), "no_run": ("当日无已对账的银行文件", "no bank file reconciled for this date"),
    "unreconciled": ("有交易但未对账的银行：{banks}", "banks with payments but no reconciled file: {banks}"),
    "identity_ok": ("调节相符", "the bridge adds up"),
    "identity_bad": ("调节不符：差额 {amount} 元", "the bridge does not add up: {amount} yuan unexplained"),
    # bridge lines
    "bank_total": ("银行文件合计（成功笔）", "bank file total (S lines)"),
    "ledger_total": ("账务合计（对账时）", "ledger total at the run"),
    "ledger_now": ("账务当前合计", "ledger total now"),
    "bank_only": ("银行有、账务无", "missing in the ledger (bank only)"),
    "ledger_only": ("账务有、银行无", "missing at the bank (ledger only)"),
    "amount_differs": ("金额不符", "amount differs"), "status_differs": ("状态不符", "status differs"),
    "debit_unknown": ("扣款结果未明", "debit outcome unknown"),
    "resolved": ("已处理（手工匹配或处理）", "resolved or matched by hand"),
    "unexplained": ("未能解释的差额", "unexplained"),
    "posted": ("补账", "posted from the bank file"), "settled_approved": ("扣款确认成功", "debits settled as approved"),
    "reversed": ("冲正", "payments reversed"),
    "statement_credits": ("对账单贷方（收入）", "statement credits"),
    "statement_debits": ("对账单借方（支出）", "statement debits"),
    "statement_net": ("对账单净额", "statement net"),
    "open_credits": ("未匹配的贷方", "unmatched credits"), "open_debits": ("未匹配的借方", "unmatched debits"),
    "reversal_pairs": ("冲正对冲", "reversal pairs"), "accepted": ("已接受未匹配", "accepted without a match"),
    "tolerance": ("容差内差额", "differences within the tolerance"),
    "collections": ("实收（账务确认）", "collections confirmed by the ledger"),
    "remittance": ("银行划款", "bank remittances"), "cheque": ("支票", "cheques"), "by_hand": ("手工匹配", "matched by hand"),
    "credit": ("其他贷方", "other credits"), "debit": ("其他借方", "other debits"), "reversal": ("冲正", "reversals"),
    "open": ("未处理", "open"), "matched": ("已匹配", "matched"),
    "res_posted": ("已补账", "posted"), "res_reversed": ("已冲正", "reversed"), "res_settled": ("已按银行结果结清", "settled"),
    "res_accepted": ("差异已接受", "accepted"),
    # columns
    "step": ("项目", "item"), "count": ("笔数", "count"), "amount": ("金额", "amount"), "sign": ("方向", "sign"),
    "kind": ("类别", "kind"), "status": ("状态", "status"), "open_count": ("未处理笔数", "open"),
    "bank_side": ("银行方", "bank side"), "ledger_side": ("账务方", "ledger side"),
    "gross": ("差异总额（绝对值）", "gross"), "net": ("净差额（账务−银行）", "net (ledger − bank)"),
    "item": ("编号", "item"), "bank_code": ("银行代码", "bank code"), "bank_name": ("银行名称", "bank"),
    "date": ("日期", "date"), "channel": ("渠道", "channel"), "reference": ("流水号／参考号", "RRN / reference"),
    "customer_no": ("户号", "customer no."), "customer_name": ("户名", "customer"),
    "bank_amount": ("银行金额", "bank amount"), "ledger_amount": ("账务金额", "ledger amount"),
    "diff": ("差额", "difference"), "detail": ("说明", "detail"), "resolution": ("处理", "resolution"),
    "direction": ("借贷", "C/D"), "counterparty": ("对方", "counterparty"), "line": ("行", "line"),
    "run": ("批次", "run"), "lines": ("笔数", "lines"), "bank_sum": ("银行合计", "bank total"),
    "ledger_records": ("账务笔数", "ledger records"), "ledger_sum": ("账务合计", "ledger total"),
    "matched_sum": ("已匹配金额", "matched amount"),
    "resolved_count": ("已处理", "resolved"), "open_gross": ("未处理差异总额", "open, gross"),
    "open_net": ("未处理净差额", "open, net"), "remittance_due": ("应划款", "remittance due"),
    "remittance_state": ("划款", "remittance"), "matched_reversed": ("已匹配冲正笔数", "matched reversed"),
    "total": ("合计", "total"), "C": ("柜台", "counter"), "D": ("代扣", "direct debit"),
    "remit_matched": ("已到账（匹配 {match}）", "matched (match {match})"), "remit_open": ("未到账", "not matched"),
    "remit_partly": ("部分到账：已到 {received} 元，未到 {outstanding} 元",
                     "partly remitted: {received} yuan received, {outstanding} yuan outstanding"),
    "series_gross": ("差异总额", "gross"), "series_net": ("净差额", "net"), "series_total": ("金额", "amount"),
    "series_matched": ("已匹配", "matched"), "series_open": ("未处理差异", "open differences"),
}


def term(key: str, **values) -> Label:
    """The words for ``key`` in both languages; an unknown key (a kind added elsewhere) is shown as itself.
    ``values`` that are ``Label``s are put in in their own language."""
    zh, en = LABELS.get(key, (key, key))
    if not values:
        return Label(zh, en)
    pick = lambda lang: {k: v(lang) if isinstance(v, Label) else v for k, v in values.items()}   # noqa: E731
    return Label(zh.format(**pick("zh")), en.format(**pick("en")))


def label(lang: str, key: str, **values) -> str:
    """The words for ``key`` in ``lang`` alone (the console's pages show one language)."""
    return term(key, **values)(lang)


@dataclass(frozen=True)
class ReportOptions:
    lang: str = "zh"
    clock: Clock = SYSTEM_CLOCK
    bank_names: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self):
        if self.lang not in LANGS:
            raise ValueError(f"report language {self.lang!r}: one of {', '.join(LANGS)}")

    def context(self, engine: Engine) -> ReportContext:
        """The report context: the ledger's bank names, overridden by the configuration's."""
        names = bank_names(engine)
        names.update({code: name for code, (name, _) in self.bank_names.items() if name})
        return ReportContext(engine, self.clock, names, {code: en for code, (_, en) in self.bank_names.items() if en})


def options_of(settings, lang: str = "zh", clock: Clock = SYSTEM_CLOCK) -> ReportOptions:
    """Report options from a site's settings: its banks' names (``banks.<code>.name`` / ``name_en``)."""
    return ReportOptions(lang, clock, {code: (b.name, b.name_en) for code, b in settings.banks.items()})


class ReportsDir(os.PathLike):
    """A reports directory with the options its reports are written with."""

    def __init__(self, path: str | os.PathLike, options: ReportOptions | None = None):
        self.path = Path(path)
        self.options = options or ReportOptions()

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"ReportsDir({str(self.path)!r}, lang={self.options.lang!r})"


def split(reports_dir: str | os.PathLike) -> tuple[Path, ReportOptions]:
    """(directory, options) of a plain path (default options) or a ``ReportsDir``."""
    if isinstance(reports_dir, ReportsDir):
        return reports_dir.path, reports_dir.options
    return Path(reports_dir), ReportOptions()

"""The day across banks: each bank's reconciliation of a business date, built as data, then rendered.

``day_report(engine, date)`` reads the figures (``DayReport``: a row per bank run, integer fen);
``build_day_doc(rep, options)`` makes the report (``report_model``) with bank names, the open
differences gross and net (ledger − bank), the expected remittance and whether it came, and a
chart of money by bank; ``render_day_text`` / ``render_day_csv`` / ``write_day_reports``
(``recon_day_{YYYYMMDD}.csv|.html``) render it. ``DayReport.report()`` is the HTTP service's form.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy import Engine, select

from ledger.finance_reports import Report
from ledger.recon import bridge
from ledger.recon.match_queries import active_match_of_run, expected_remittance
from ledger.recon.report_labels import ReportOptions, label, split
from ledger.recon.report_model import Bar, Chart, Column, ReportDoc, Section, Table
from ledger.recon.report_render import render_csv, render_text
from ledger.recon.run_reports import bank_label, local_time, sign_off, stored_bank_names, write_doc
from ledger.recon_tables import recon_items, recon_runs
from ledger.schema import payments

DAY_COLUMNS = ("bank_code", "run_id", "file_name", "bank_lines", "bank_sum", "ledger_records", "ledger_sum",
               "matched", "matched_sum", "open", "open_gross", "open_net", "resolved", "difference",
               "expected_remittance", "remittance")
MONEY = ("bank_sum", "ledger_sum", "matched_sum", "open_gross", "open_net", "difference", "expected_remittance")


@dataclass
class DayReport:
    business_date: date
    rows: list[dict] = field(default_factory=list)
    unreconciled_banks: list[str] = field(default_factory=list)   # banks with payments that day but no run
    bank_names: dict[str, str] = field(default_factory=dict)      # the ledger's banks.name rows

    def totals(self) -> dict:
        t = {c: sum(r[c] for r in self.rows) for c in DAY_COLUMNS
             if c not in ("bank_code", "run_id", "file_name", "remittance")}
        return {"bank_code": "total", "run_id": "", "file_name": "", "remittance": "", "remittance_match": None, **t}

    def report(self) -> Report:
        """As a finance report (title, columns, amount columns, rows, total): the HTTP service's form."""
        return Report(f"Reconciliation of business date {self.business_date} (amounts in yuan)", list(DAY_COLUMNS),
                      set(MONEY), self.rows, self.totals() if self.rows else None)


def day_report(engine: Engine, business_date: date) -> DayReport:
    rep = DayReport(business_date)
    rr, ri = recon_runs.c, recon_items.c
    with engine.connect() as conn:
        rep.bank_names = stored_bank_names(conn)
        runs = conn.execute(select(recon_runs).where(rr.kind == "bank", rr.business_date == business_date)
                            .order_by(rr.bank_code)).mappings().all()
        for run in runs:
            items = [dict(i) for i in conn.execute(select(recon_items).where(ri.run_id == run["run_id"])).mappings()]
            open_ = [i for i in items if i["status"] == "open"]
            expected, _ = expected_remittance(conn, run["run_id"])
            match = active_match_of_run(conn, run["run_id"])
            rep.rows.append({"bank_code": run["bank_code"], "run_id": run["run_id"], "file_name": run["file_name"],
                             "bank_lines": run["bank_count"], "bank_sum": int(run["bank_sum"]),
                             "ledger_records": run["ledger_count"], "ledger_sum": int(run["ledger_sum"]),
                             "matched": run["matched_count"] + sum(1 for i in items if i["status"] == "matched"),
                             "matched_sum": int(run["matched_sum"]), "open": len(open_),
                             "open_gross": sum(abs(bridge.difference(i)) for i in open_),
                             "open_net": sum(bridge.difference(i) for i in open_),
                             "resolved": sum(1 for i in items if i["status"] == "resolved"),
                             "difference": int(run["ledger_sum"]) - int(run["bank_sum"]),
                             "expected_remittance": expected, "remittance_match": match,
                             "remittance": f"matched (match {match})" if match else "not matched"})
        seen = {r["bank_code"] for r in rep.rows}
        rep.unreconciled_banks = sorted(b for b in conn.execute(
            select(payments.c.bank_code).where(payments.c.business_date == business_date).distinct()).scalars() if b not in seen)
    return rep


def build_day_doc(rep: DayReport, options: ReportOptions = ReportOptions()) -> ReportDoc:
    lang = options.lang
    cols = [Column("bank_code", label(lang, "bank_code"), "identifier"), Column("bank_name", label(lang, "bank_name")),
            Column("run_id", label(lang, "run"), "identifier"), Column("file_name", label(lang, "file"), printed=False),
            Column("bank_lines", label(lang, "lines"), "count"), Column("bank_sum", label(lang, "bank_sum"), "money"),
            Column("ledger_records", label(lang, "ledger_records"), "count"),
            Column("ledger_sum", label(lang, "ledger_sum"), "money"), Column("matched", label(lang, "matched"), "count"),
            Column("matched_sum", label(lang, "matched_sum"), "money"), Column("open", label(lang, "open"), "count"),
            Column("open_gross", label(lang, "open_gross"), "money"), Column("open_net", label(lang, "open_net"), "money"),
            Column("resolved", label(lang, "resolved_count"), "count"), Column("difference", label(lang, "net"), "money"),
            Column("expected_remittance", label(lang, "remittance_due"), "money"),
            Column("remittance", label(lang, "remittance_state"))]

    def remittance(match_id):
        return label(lang, "remit_matched", match=match_id) if match_id else label(lang, "remit_open")

    rows = [{**r, "bank_name": options.bank_name(r["bank_code"], rep.bank_names),
             "remittance": remittance(r["remittance_match"])} for r in rep.rows]
    totals = {**rep.totals(), "bank_code": label(lang, "total")} if rows else None
    if totals:
        totals.update(bank_name="", remittance="")
    chart = Chart("chart-banks", label(lang, "chart_banks"),
                  {"matched": label(lang, "series_matched"), "gross": label(lang, "open_gross"),
                   "net": label(lang, "open_net")},
                  [(bank_label(options, r["bank_code"], rep.bank_names),
                    [Bar("matched", r["matched_sum"]), Bar("gross", r["open_gross"]), Bar("net", r["open_net"])])
                   for r in rep.rows])
    notes = [] if rows else [label(lang, "no_run")]
    if rep.unreconciled_banks:
        notes.append(label(lang, "unreconciled", banks=", ".join(bank_label(options, b, rep.bank_names)
                                                                for b in rep.unreconciled_banks)))
    section = Section("banks", label(lang, "banks"), Table("banks", cols, rows, totals), chart, notes,
                      "bad" if notes else "")
    facts = [(label(lang, "printed"), local_time(options, options.clock.now())), (label(lang, "amount_unit"), label(lang, "yuan"))]
    return ReportDoc(label(lang, "day_title", date=rep.business_date), lang, facts, [section], sign_off(lang))


def render_day_text(rep: DayReport, options: ReportOptions = ReportOptions()) -> str:
    return render_text(build_day_doc(rep, options))


def render_day_csv(rep: DayReport, options: ReportOptions = ReportOptions()) -> str:
    return render_csv(build_day_doc(rep, options))


def write_day_reports(rep: DayReport, reports_dir) -> list[Path]:
    directory, options = split(reports_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return write_doc(build_day_doc(rep, options), directory, f"recon_day_{rep.business_date:%Y%m%d}")

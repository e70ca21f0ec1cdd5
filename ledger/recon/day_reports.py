"""The day across banks: each bank's reconciliation of a business date, as a document of the one
report model (``ledger.reports``).

``day_report(engine, date)`` reads the figures (``DayReport``: a row per bank run, integer fen);
``day_doc(ctx, date)`` makes the report (``ledger.reports.definition.ReportDoc``) with bank names,
the open differences gross and net (ledger − bank), the expected remittance and whether it came
(matched; partly, with what was received and what is outstanding; or not), and a chart of money by bank; the catalogue serves it as ``recon-day`` in every format.
``day_text`` is the text ``gridpay recon report`` prints; ``write_day_reports`` writes
``recon_day_{YYYYMMDD}.csv|.html`` (keyed CSV + HTML, like the run reports).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy import Engine, select

from ledger.recon import bridge
from ledger.recon.match_queries import active_match_of_run, expected_remittance
from ledger.recon.remittances import remitted_of_runs
from ledger.recon.report_labels import ReportOptions, split, term
from ledger.recon.run_reports import write_doc
from ledger.recon_tables import recon_items, recon_runs
from ledger.reports.cells import yuan
from ledger.reports.context import SIGN_OFF, ReportContext
from ledger.reports.definition import Chart, Column, Label, ReportDoc, Section, machine, say
from ledger.reports.render_text import write_text
from ledger.schema import payments

DAY_COLUMNS = ("bank_code", "run_id", "file_name", "bank_lines", "bank_sum", "ledger_records", "ledger_sum",
               "matched", "matched_sum", "open", "open_gross", "open_net", "resolved", "difference",
               "expected_remittance", "remitted", "outstanding", "remittance")


@dataclass
class DayReport:
    business_date: date
    rows: list[dict] = field(default_factory=list)
    unreconciled_banks: list[str] = field(default_factory=list)   # banks with payments that day but no run

    def totals(self) -> dict:
        return {c: sum(r[c] for r in self.rows) for c in DAY_COLUMNS
                if c not in ("bank_code", "run_id", "file_name", "remittance")}


def day_report(engine: Engine, business_date: date) -> DayReport:
    rep = DayReport(business_date)
    rr, ri = recon_runs.c, recon_items.c
    with engine.connect() as conn:
        runs = conn.execute(select(recon_runs).where(rr.kind == "bank", rr.business_date == business_date)
                            .order_by(rr.bank_code)).mappings().all()
        for run in runs:
            items = [dict(i) for i in conn.execute(select(recon_items).where(ri.run_id == run["run_id"])).mappings()]
            open_ = [i for i in items if i["status"] == "open"]
            expected, _ = expected_remittance(conn, run["run_id"])
            match = active_match_of_run(conn, run["run_id"])
            remitted = remitted_of_runs(conn, [run["run_id"]]).get(run["run_id"], 0)
            rep.rows.append({"bank_code": run["bank_code"], "run_id": run["run_id"], "file_name": run["file_name"],
                             "bank_lines": run["bank_count"], "bank_sum": int(run["bank_sum"]),
                             "ledger_records": run["ledger_count"], "ledger_sum": int(run["ledger_sum"]),
                             "matched": run["matched_count"] + sum(1 for i in items if i["status"] == "matched"),
                             "matched_sum": int(run["matched_sum"]), "open": len(open_),
                             "open_gross": sum(abs(bridge.difference(i)) for i in open_),
                             "open_net": sum(bridge.difference(i) for i in open_),
                             "resolved": sum(1 for i in items if i["status"] == "resolved"),
                             "difference": int(run["ledger_sum"]) - int(run["bank_sum"]),
                             "expected_remittance": expected, "remitted": remitted,
                             "outstanding": expected - remitted,
                             "remittance": remittance_state(match, expected, remitted)})
        seen = {r["bank_code"] for r in rep.rows}
        rep.unreconciled_banks = sorted(b for b in conn.execute(
            select(payments.c.bank_code).where(payments.c.business_date == business_date).distinct()).scalars() if b not in seen)
    return rep


def remittance_state(match: int | None, expected: int, remitted: int) -> Label:
    """Whether a bank run's money came: matched to a credit; partly (credits that claim the run came
    to less than it expects: what was received, what is outstanding); or not at all."""
    if match:
        return term("remit_matched", match=match)
    if remitted:
        return term("remit_partly", received=yuan(remitted), outstanding=yuan(expected - remitted))
    return term("remit_open")


def day_doc(ctx: ReportContext, business_date: date) -> ReportDoc:
    rep = day_report(ctx.engine, business_date)
    columns = [Column("bank_code", term("bank_code"), "identifier"), Column("bank_name", term("bank_name")),
               Column("run_id", term("run"), "identifier"), machine("file_name"),
               Column("bank_lines", term("lines"), "count"), Column("bank_sum", term("bank_sum"), "money"),
               Column("ledger_records", term("ledger_records"), "count"),
               Column("ledger_sum", term("ledger_sum"), "money"), Column("matched", term("matched"), "count"),
               Column("matched_sum", term("matched_sum"), "money"), Column("open", term("open"), "count"),
               Column("open_gross", term("open_gross"), "money"), Column("open_net", term("open_net"), "money"),
               Column("resolved", term("resolved_count"), "count"), Column("difference", term("net"), "money"),
               Column("expected_remittance", term("remittance_due"), "money"),
               machine("remitted", "money"), machine("outstanding", "money"),
               Column("remittance", term("remittance_state"))]
    rows = [{**r, "bank_name": ctx.bank_name(r["bank_code"])} for r in rep.rows]
    totals = {**rep.totals(), "bank_code": term("total")} if rows else None
    chart = Chart(term("chart_banks"), [term("series_matched"), term("open_gross"), term("open_net")],
                  [(ctx.bank_named(r["bank_code"]), [r["matched_sum"], r["open_gross"], r["open_net"]])
                   for r in rep.rows],
                  "chart-banks")
    notes = [] if rows else [term("no_run")]
    if rep.unreconciled_banks:
        banks = [ctx.bank_named(b) for b in rep.unreconciled_banks]
        listed = Label(*(", ".join(say(b, lang) for b in banks) for lang in ("zh", "en")))
        notes.append(term("unreconciled", banks=listed))
    section = Section("banks", term("banks"), columns, rows, totals, chart=chart, paragraphs=notes,
                      status="bad" if notes else "")
    parameters = [(term("date"), business_date.isoformat()), (term("amount_unit"), term("yuan"))]
    return ReportDoc("recon-day", term("day_title", date=business_date), parameters,
                     [section], ctx.clock.local(), sign_off=SIGN_OFF)


def day_text(engine: Engine, business_date: date, options: ReportOptions = ReportOptions()) -> str:
    out = io.StringIO()
    write_text(day_doc(options.context(engine), business_date), out, options.lang)
    return out.getvalue()


def write_day_reports(engine: Engine, business_date: date, reports_dir) -> list[Path]:
    directory, options = split(reports_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return write_doc(day_doc(options.context(engine), business_date), directory,
                     f"recon_day_{business_date:%Y%m%d}", options.lang)

"""Reconciliation run reports for finance, as documents of the one report model (``ledger.reports``).

``run_doc(ctx, run_id)`` reads a run and its items and builds the report (a
``ledger.reports.definition.ReportDoc``, both languages): parameters (file, who ran it, when in
local time), the bridge from one side's total to the other's (``bridge``), the differences by kind
with their gross and net amounts, charts of money, the exceptions with bank and customer names,
the sign-off. ``write_run_reports(engine, run_id, reports_dir)`` writes it as keyed CSV + HTML
(``ledger.reports.render_*``) to ``recon_run_{id}_{bank}_{YYYYMMDD}.csv|.html`` (bank runs) or
``recon_run_{id}_finance.csv|.html``; ``reports_dir`` is a path, or a ``ReportsDir`` carrying the
language, clock and bank names (``report_labels``). The catalogue serves the same document as
``recon-run`` in every format. Rejections: ``{file name}.rejected.csv`` (``line,field,reason``).
The day across banks is ``day_reports``.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Engine, func, select

from config.clock import Clock
from ledger.errors import Refused
from ledger.recon import bridge
from ledger.recon.report_details import describe
from ledger.recon.report_labels import split, term
from ledger.reports.cells import local_stamp, yuan
from ledger.reports.context import SIGN_OFF, ReportContext
from ledger.reports.definition import Chart, Column, Label, ReportDoc, Section, machine
from ledger.reports.render_csv import csv_text, text_cell
from ledger.reports.render_html import html_text
from ledger.recon_tables import recon_items, recon_runs
from ledger.schema import customers, payments, reversals

# columns of an exception the CSV keeps for machines beyond what the page shows
MACHINE_COLUMNS = (("bank_code", "identifier"), ("business_date", "date"), ("channel", "identifier"),
                   ("rrn", "identifier"), ("bank_status", "identifier"), ("ledger_status", "identifier"),
                   ("payment_id", "identifier"), ("debit_id", "identifier"), ("line_no", "count"),
                   ("direction", "identifier"), ("cheque_no", "identifier"), ("entry_ref", "identifier"),
                   ("counterparty", "text"), ("detail", "text"), ("resolution_code", "identifier"),
                   ("resolved_by", "text"), ("note", "text"))


def local_time(clock: Clock, at: datetime | None) -> str:
    """A stored UTC time in the business timezone, with its offset (``2026-11-24 09:30:00 UTC+08:00``)."""
    if at is None:
        return ""
    return local_stamp(clock.local(at if at.tzinfo else at.replace(tzinfo=timezone.utc)))


def customer_names(conn, numbers) -> dict[str, str]:
    numbers = sorted({n for n in numbers if n})
    out: dict[str, str] = {}
    for start in range(0, len(numbers), 900):
        out.update(conn.execute(select(customers.c.customer_no, customers.c.customer_name)
                                .where(customers.c.customer_no.in_(numbers[start:start + 900]))).all())
    return out


def bridge_section(key: str, title: Label, lines: list[bridge.BridgeLine]) -> Section:
    columns = [Column("step", term("step")), Column("count", term("count"), "count"),
               Column("amount", term("amount"), "money"), machine("key"), machine("role")]
    rows = [{"step": term(ln.key), "count": ln.count, "amount": ln.fen, "key": ln.key, "role": ln.role} for ln in lines]
    unexplained = sum(ln.fen for ln in lines if ln.key == "unexplained")
    ok = bridge.check(lines) + unexplained == 0 and not any(ln.key == "unexplained" for ln in lines)
    words = term("identity_ok") if ok else term("identity_bad", amount=yuan(unexplained))
    return Section(key, title, columns, rows, paragraphs=[words], status="ok" if ok else "bad",
                   row_classes=[ln.role for ln in lines])


def load_run(conn, run_id: int) -> tuple[dict, list[dict]]:
    run = conn.execute(select(recon_runs).where(recon_runs.c.run_id == run_id)).mappings().one_or_none()
    if run is None:
        raise Refused(f"no reconciliation run {run_id}")
    items = [dict(r) for r in conn.execute(select(recon_items).where(recon_items.c.run_id == run_id)
                                           .order_by(recon_items.c.item_id)).mappings()]
    return dict(run), items


def ledger_now(conn, bank_code: str, business_date) -> tuple[int, int]:
    """(count, fen) of the ledger's unreversed payments of a bank and business date, as they are now."""
    p, r = payments.c, reversals.c
    count, total = conn.execute(select(func.count(), func.coalesce(func.sum(p.amount), 0))
                                .select_from(payments.outerjoin(reversals, r.payment_id == p.payment_id))
                                .where(p.bank_code == bank_code, p.business_date == business_date,
                                       r.reversal_id.is_(None))).one()
    return int(count), int(total)


def _parameters(run: dict, items: list[dict], clock: Clock) -> list[tuple[Label, str | Label]]:
    open_n = sum(1 for i in items if i["status"] == "open")
    state = term("all_matched") if not open_n else term("n_open", n=open_n)
    return [(term("run"), str(run["run_id"])), (term("file"), f"{run['file_name']} ({run['file_format']})"),
            (term("sha256"), run["file_sha256"]),
            (term("run_by"), run["actor"]), (term("finished"), local_time(clock, run["finished_at"])),
            (term("state"), state), (term("amount_unit"), term("yuan"))]


def exceptions_section(items: list[dict], names: dict[str, str], ctx: ReportContext, finance: bool,
                       title: Label) -> Section:
    columns = [Column("item", term("item"), "identifier"), Column("kind", term("kind")),
               Column("status", term("status")), Column("date", term("date"), "date"),
               Column("reference", term("reference"), "identifier"),
               Column("customer_no", term("customer_no"), "identifier"),
               Column("customer_name", term("customer_name")),
               Column("bank_amount", term("bank_amount"), "money"),
               Column("ledger_amount", term("ledger_amount"), "money"),
               Column("diff", term("diff"), "money"), Column("description", term("detail")),
               Column("resolution", term("resolution"))]
    columns += [machine(key, kind) for key, kind in MACHINE_COLUMNS]
    rows = []
    for i in items:
        bank = ctx.bank_named(i["bank_code"])
        customer = bank if finance and i["kind"] == "remittance" else names.get(i["customer_no"], "")
        rows.append({**{k: i.get(k) for k, _ in MACHINE_COLUMNS}, "item": i["item_id"], "kind": term(i["kind"]),
                     "status": term(i["status"]), "date": i["business_date"],
                     "reference": i["rrn"] or i["reference"] or i["cheque_no"], "customer_no": i["customer_no"],
                     "customer_name": customer, "bank_amount": bridge.signed(i) if finance else i["bank_amount"],
                     "ledger_amount": i["ledger_amount"], "diff": None if finance else bridge.difference(i),
                     "description": Label(*(describe(i, lang, _in(bank, lang)) for lang in ("zh", "en"))),
                     "resolution_code": i["resolution"], "resolution": _resolution(i)})
    return Section("exceptions", title, columns, rows, row_classes=[i["status"] for i in items],
                   paragraphs=[] if items else [term("none")], status="" if items else "ok")


def _in(words: Label | str, lang: str) -> str:
    return words(lang) if isinstance(words, Label) else words


def _resolution(item: dict) -> Label | str:
    if not item["resolved_by"]:
        return ""
    how = term(f"res_{item['resolution']}") if item["resolution"] else term("by_hand")
    return term("resolved_as", how=how, by=item["resolved_by"], note=item["note"] or "")


def _differences(items: list[dict]) -> Section:
    columns = [Column("kind", term("kind")), Column("count", term("count"), "count"),
               Column("open_count", term("open_count"), "count"),
               Column("bank_side", term("bank_side"), "money"), Column("ledger_side", term("ledger_side"), "money"),
               Column("gross", term("gross"), "money"), Column("net", term("net"), "money"), machine("key")]
    kinds = list(bridge.BANK_KINDS) + sorted({i["kind"] for i in items} - set(bridge.BANK_KINDS))
    rows = []
    for kind in kinds:
        mine = [i for i in items if i["kind"] == kind]
        rows.append({"kind": term(kind), "key": kind, "count": len(mine),
                     "open_count": sum(1 for i in mine if i["status"] == "open"),
                     "bank_side": sum(bridge.bank_side(i) for i in mine),
                     "ledger_side": sum(bridge.ledger_side_at_run(i) for i in mine),
                     "gross": sum(abs(bridge.difference(i)) for i in mine),
                     "net": sum(bridge.difference(i) for i in mine)})
    figures = ("count", "open_count", "bank_side", "ledger_side", "gross", "net")
    totals = {"kind": term("total"), "key": "total", **{k: sum(r[k] for r in rows) for k in figures}}
    chart = Chart(term("chart_differences"), [term("series_gross"), term("series_net")],
                  [(r["kind"], [r["gross"], r["net"]]) for r in rows], "chart-differences")
    return Section("differences", term("differences"), columns, rows, totals, chart=chart)


def _channels(run: dict) -> Section | None:
    channels = json.loads(run["details"] or "{}").get("channels")
    if not channels:
        return None
    columns = [Column("channel", term("channel")), Column("matched", term("matched"), "count"),
               Column("matched_sum", term("matched_sum"), "money"),
               Column("matched_reversed", term("matched_reversed"), "count")]
    rows = [{"channel": term(ch), **v} for ch, v in sorted(channels.items())]
    return Section("channels", term("channels"), columns, rows)


def bank_run_doc(ctx: ReportContext, conn, run: dict, items: list[dict]) -> ReportDoc:
    names = customer_names(conn, [i["customer_no"] for i in items])
    lines = bridge.bank_bridge(run, items)
    since = bridge.ledger_since(run, items, *ledger_now(conn, run["bank_code"], run["business_date"]))
    totals_chart = Chart(term("chart_totals"), [term("series_total")],
                         [(term(k), [v]) for k, v in (
                             ("bank_total", int(run["bank_sum"])), ("matched", int(run["matched_sum"])),
                             ("ledger_total", int(run["ledger_sum"])), ("ledger_now", since[-1].fen))], "chart-totals")
    title = term("run_title_bank", run=run["run_id"], bank=ctx.bank_named(run["bank_code"]), date=run["business_date"])
    sections = [bridge_section("bridge", term("bridge"), lines), bridge_section("since", term("since"), since),
                _differences(items), Section("totals-chart", term("chart_totals"), chart=totals_chart),
                _channels(run),
                exceptions_section(items, names, ctx, False, term("exceptions", n=len(items)))]
    return ReportDoc("recon-run", title, _parameters(run, items, ctx.clock), [s for s in sections if s is not None],
                     ctx.clock.local(), sign_off=SIGN_OFF)


def _entries(items: list[dict]) -> Section:
    columns = [Column("kind", term("kind")), Column("status", term("status")),
               Column("count", term("count"), "count"), Column("amount", term("amount"), "money"), machine("key")]
    groups: dict[tuple[str, str], list[int]] = {}
    for i in items:
        g = groups.setdefault((i["kind"], i["status"]), [0, 0])
        g[0] += 1
        g[1] += bridge.signed(i)
    rows = [{"kind": term(k), "status": term(s), "count": n, "amount": fen, "key": f"{k}:{s}"}
            for (k, s), (n, fen) in sorted(groups.items())]
    totals = {"kind": term("total"), "count": len(items), "amount": sum(bridge.signed(i) for i in items)}
    by_kind: dict[str, dict[str, int]] = {}
    for (k, s), (_, fen) in groups.items():
        by_kind.setdefault(k, {})["matched" if s == "matched" else "open"] = fen
    chart = Chart(term("chart_entries"), [term("series_matched"), term("series_open")],
                  [(term(k), [v.get("matched", 0), v.get("open", 0)]) for k, v in sorted(by_kind.items())],
                  "chart-entries")
    return Section("entries", term("entries"), columns, rows, totals, chart=chart)


def finance_run_doc(ctx: ReportContext, conn, run: dict, items: list[dict]) -> ReportDoc:
    names = customer_names(conn, [i["customer_no"] for i in items])
    columns = [Column("kind", term("kind")), Column("count", term("count"), "count"),
               Column("amount", term("amount"), "money"), machine("key")]
    rows = [{"kind": term(k), "count": n, "amount": fen, "key": k}
            for k, (n, fen) in sorted(bridge.collections_by_kind(items).items())]
    collections = Section("collections", term("collections_by_kind"), columns, rows,
                          {"kind": term("total"), "count": sum(r["count"] for r in rows),
                           "amount": sum(r["amount"] for r in rows)})
    exceptions = [i for i in items if i["status"] != "matched"]
    sections = [bridge_section("bridge", term("bridge_finance"), bridge.finance_bridge(items)), collections,
                _entries(items),
                exceptions_section(exceptions, names, ctx, True,
                                   term("exceptions", n=len(exceptions)))]
    return ReportDoc("recon-run", term("run_title_finance", run=run["run_id"]), _parameters(run, items, ctx.clock),
                     sections, ctx.clock.local(), sign_off=SIGN_OFF)


def run_doc(ctx: ReportContext, run_id: int) -> ReportDoc:
    """A run's report, as the run and its items stand now."""
    return build_run_doc(ctx, run_id)[1]


def build_run_doc(ctx: ReportContext, run_id: int) -> tuple[dict, ReportDoc]:
    """(the run's row, its report)."""
    with ctx.engine.connect() as conn:
        run, items = load_run(conn, run_id)
        build = bank_run_doc if run["kind"] == "bank" else finance_run_doc
        return run, build(ctx, conn, run, items)


def run_stem(run: dict) -> str:
    if run["kind"] == "bank":
        return f"recon_run_{run['run_id']}_{run['bank_code']}_{run['business_date']:%Y%m%d}"
    return f"recon_run_{run['run_id']}_finance"


def write_run_reports(engine: Engine, run_id: int, reports_dir) -> list[Path]:
    directory, options = split(reports_dir)
    directory.mkdir(parents=True, exist_ok=True)
    run, doc = build_run_doc(options.context(engine), run_id)
    return write_doc(doc, directory, run_stem(run), options.lang)


def write_doc(doc: ReportDoc, directory: Path, stem: str, lang: str) -> list[Path]:
    """The report as keyed CSV (for programs and spreadsheets) and HTML (to read, print and sign)."""
    csv_path, html_path = directory / f"{stem}.csv", directory / f"{stem}.html"
    atomic_write(csv_path, csv_text(doc, lang, keyed=True).lstrip("\ufeff"), "utf-8-sig")
    atomic_write(html_path, html_text(doc, lang), "utf-8")
    return [csv_path, html_path]


def write_rejection(file_name: str, errors: list[tuple], more: int, reports_dir) -> list[Path]:
    directory, _ = split(reports_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{file_name}.rejected.csv"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["line", "field", "reason"])
    for line, fld, reason in errors:
        w.writerow([line, text_cell(str(fld)), text_cell(str(reason))])
    if more:
        w.writerow(["", "-", f"... and {more} more errors"])
    atomic_write(path, buf.getvalue(), "utf-8-sig")
    return [path]


def atomic_write(path: Path, text: str, encoding: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding=encoding)
    tmp.replace(path)

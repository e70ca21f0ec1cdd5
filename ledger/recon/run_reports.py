"""Reconciliation run reports for finance: built as data (``report_model``), then written as CSV + HTML.

``build_run_doc(conn, run_id, options)`` reads a run and its items and builds the report:
facts (file, who ran it, when in local time), the bridge from one side's total to the other's
(``bridge``), the differences by kind with their gross and net amounts, charts of money, the
exceptions with bank and customer names. ``write_run_reports(engine, run_id, reports_dir)``
renders it (``report_render``) to ``recon_run_{id}_{bank}_{YYYYMMDD}.csv|.html`` (bank runs) or
``recon_run_{id}_finance.csv|.html``; ``reports_dir`` is a path, or a ``ReportsDir`` carrying the
language, clock and bank names (``report_labels``). Rejections: ``{file name}.rejected.csv``
(``line,field,reason``). The day across banks is ``day_reports``.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Engine, func, select

from ledger.errors import Refused
from ledger.recon import bridge
from ledger.recon.report_details import describe
from ledger.recon.report_labels import ReportOptions, label, split
from ledger.recon.report_model import Bar, Chart, Column, ReportDoc, Section, Table
from ledger.recon.report_render import render_csv, render_html, text_cell, yuan
from ledger.recon_tables import recon_items, recon_runs
from ledger.schema import banks, customers, payments, reversals

# columns of an exception the CSV keeps for machines beyond what the page shows
MACHINE_COLUMNS = (("bank_code", "identifier"), ("business_date", "date"), ("channel", "identifier"),
                   ("rrn", "identifier"), ("bank_status", "identifier"), ("ledger_status", "identifier"),
                   ("payment_id", "identifier"), ("debit_id", "identifier"), ("line_no", "count"),
                   ("direction", "identifier"), ("cheque_no", "identifier"), ("entry_ref", "identifier"),
                   ("counterparty", "text"), ("detail", "text"), ("resolution_code", "identifier"),
                   ("resolved_by", "text"), ("note", "text"))


def local_time(options: ReportOptions, at: datetime | None) -> str:
    """A stored UTC time in the business timezone, with its offset (``2026-11-24 09:30:00 UTC+08:00``)."""
    if at is None:
        return ""
    local = options.clock.local(at if at.tzinfo else at.replace(tzinfo=timezone.utc))
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} UTC{offset[:3]}:{offset[3:]}"


def stored_bank_names(conn) -> dict[str, str]:
    return {code: name for code, name in conn.execute(select(banks.c.bank_code, banks.c.name))}


def customer_names(conn, numbers) -> dict[str, str]:
    numbers = sorted({n for n in numbers if n})
    out: dict[str, str] = {}
    for start in range(0, len(numbers), 900):
        out.update(conn.execute(select(customers.c.customer_no, customers.c.customer_name)
                                .where(customers.c.customer_no.in_(numbers[start:start + 900]))).all())
    return out


def bank_label(options: ReportOptions, code: str | None, stored: dict[str, str]) -> str:
    name = options.bank_name(code, stored)
    return f"{name}（{code}）" if name and options.lang == "zh" else f"{name} ({code})" if name else (code or "")


def bridge_table(table_id: str, lines: list[bridge.BridgeLine], lang: str) -> Table:
    cols = [Column("step", label(lang, "step")), Column("count", label(lang, "count"), "count"),
            Column("amount", label(lang, "amount"), "money"), Column("key", "key", printed=False),
            Column("role", "role", printed=False)]
    rows = [{"step": label(lang, ln.key), "count": ln.count, "amount": ln.fen, "key": ln.key, "role": ln.role}
            for ln in lines]
    return Table(table_id, cols, rows, row_classes=[ln.role for ln in lines])


def bridge_section(section_id: str, heading: str, lines: list[bridge.BridgeLine], lang: str) -> Section:
    gap = bridge.check(lines) + sum(ln.fen for ln in lines if ln.key == "unexplained")
    ok = gap == 0 and not any(ln.key == "unexplained" for ln in lines)
    words = label(lang, "identity_ok") if ok else label(lang, "identity_bad", amount=yuan(
        sum(ln.fen for ln in lines if ln.key == "unexplained")))
    return Section(section_id, heading, bridge_table(section_id, lines, lang), paragraphs=[words],
                   status="ok" if ok else "bad")


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


def _facts(run: dict, items: list[dict], options: ReportOptions) -> list[tuple[str, str]]:
    lang = options.lang
    open_n = sum(1 for i in items if i["status"] == "open")
    state = label(lang, "all_matched") if not open_n else label(lang, "n_open", n=open_n)
    return [(label(lang, "file"), f"{run['file_name']} ({run['file_format']})"), (label(lang, "sha256"), run["file_sha256"]),
            (label(lang, "run_by"), run["actor"]), (label(lang, "finished"), local_time(options, run["finished_at"])),
            (label(lang, "printed"), local_time(options, options.clock.now())), (label(lang, "state"), state),
            (label(lang, "amount_unit"), label(lang, "yuan"))]


def exceptions_table(items: list[dict], names: dict[str, str], options: ReportOptions, finance: bool,
                     stored: dict[str, str]) -> Table:
    lang = options.lang
    cols = [Column("item", label(lang, "item"), "identifier"), Column("kind", label(lang, "kind")),
            Column("status", label(lang, "status")), Column("date", label(lang, "date"), "date"),
            Column("reference", label(lang, "reference"), "identifier"),
            Column("customer_no", label(lang, "customer_no"), "identifier"),
            Column("customer_name", label(lang, "customer_name")),
            Column("bank_amount", label(lang, "bank_amount"), "money"),
            Column("ledger_amount", label(lang, "ledger_amount"), "money"),
            Column("diff", label(lang, "diff"), "money"), Column("description", label(lang, "detail")),
            Column("resolution", label(lang, "resolution"))]
    cols += [Column(key, key, kind, printed=False) for key, kind in MACHINE_COLUMNS]
    rows = []
    for i in items:
        amount = bridge.signed(i) if finance else i["bank_amount"]
        rows.append({**{k: i.get(k) for k, _ in MACHINE_COLUMNS}, "item": i["item_id"], "kind": label(lang, i["kind"]),
                     "status": label(lang, i["status"]), "date": i["business_date"],
                     "reference": i["rrn"] or i["reference"] or i["cheque_no"], "customer_no": i["customer_no"],
                     "customer_name": names.get(i["customer_no"], ""), "bank_amount": amount,
                     "ledger_amount": i["ledger_amount"], "diff": None if finance else bridge.difference(i),
                     "description": describe(i, lang, bank_label(options, i["bank_code"], stored)),
                     "resolution_code": i["resolution"],
                     "resolution": _resolution(i, lang)})
    return Table("exceptions", cols, rows, row_classes=[i["status"] for i in items])


def _resolution(item: dict, lang: str) -> str:
    if not item["resolved_by"]:
        return ""
    how = label(lang, f"res_{item['resolution']}") if item["resolution"] else label(lang, "by_hand")
    return f"{how} · {item['resolved_by']}: {item['note'] or ''}"


def _differences(items: list[dict], lang: str) -> tuple[Table, Chart]:
    cols = [Column("kind", label(lang, "kind")), Column("count", label(lang, "count"), "count"),
            Column("open_count", label(lang, "open_count"), "count"),
            Column("bank_side", label(lang, "bank_side"), "money"), Column("ledger_side", label(lang, "ledger_side"), "money"),
            Column("gross", label(lang, "gross"), "money"), Column("net", label(lang, "net"), "money"),
            Column("key", "key", printed=False)]
    kinds = list(bridge.BANK_KINDS) + sorted({i["kind"] for i in items} - set(bridge.BANK_KINDS))
    rows = []
    for kind in kinds:
        mine = [i for i in items if i["kind"] == kind]
        rows.append({"kind": label(lang, kind), "key": kind, "count": len(mine),
                     "open_count": sum(1 for i in mine if i["status"] == "open"),
                     "bank_side": sum(bridge.bank_side(i) for i in mine),
                     "ledger_side": sum(bridge.ledger_side_at_run(i) for i in mine),
                     "gross": sum(abs(bridge.difference(i)) for i in mine), "net": sum(bridge.difference(i) for i in mine)})
    totals = {"kind": label(lang, "total"), "key": "total", **{k: sum(r[k] for r in rows) for k in
                                                               ("count", "open_count", "bank_side", "ledger_side", "gross", "net")}}
    chart = Chart("chart-differences", label(lang, "chart_differences"),
                  {"gross": label(lang, "series_gross"), "net": label(lang, "series_net")},
                  [(r["kind"], [Bar("gross", r["gross"]), Bar("net", r["net"])]) for r in rows])
    return Table("differences", cols, rows, totals), chart


def _channels(run: dict, lang: str) -> Section | None:
    channels = json.loads(run["details"] or "{}").get("channels")
    if not channels:
        return None
    cols = [Column("channel", label(lang, "channel")), Column("matched", label(lang, "matched"), "count"),
            Column("matched_sum", label(lang, "matched_sum"), "money"),
            Column("matched_reversed", label(lang, "matched_reversed"), "count")]
    rows = [{"channel": label(lang, ch), **v} for ch, v in sorted(channels.items())]
    return Section("channels", label(lang, "channels"), Table("channels", cols, rows))


def bank_run_doc(conn, run: dict, items: list[dict], options: ReportOptions) -> ReportDoc:
    lang = options.lang
    stored = stored_bank_names(conn)
    names = customer_names(conn, [i["customer_no"] for i in items])
    lines = bridge.bank_bridge(run, items)
    since = bridge.ledger_since(run, items, *ledger_now(conn, run["bank_code"], run["business_date"]))
    differences, diff_chart = _differences(items, lang)
    totals_chart = Chart("chart-totals", label(lang, "chart_totals"), {"amount": label(lang, "series_total")},
                         [(label(lang, k), [Bar("amount", v)]) for k, v in (
                             ("bank_total", int(run["bank_sum"])), ("matched", int(run["matched_sum"])),
                             ("ledger_total", int(run["ledger_sum"])), ("ledger_now", since[-1].fen))])
    title = label(lang, "run_title_bank", run=run["run_id"], bank=bank_label(options, run["bank_code"], stored),
                  date=run["business_date"])
    sections = [bridge_section("bridge", label(lang, "bridge"), lines, lang),
                bridge_section("since", label(lang, "since"), since, lang),
                Section("differences", label(lang, "differences"), differences, diff_chart),
                Section("totals-chart", label(lang, "chart_totals"), chart=totals_chart),
                _channels(run, lang),
                Section("exceptions", f"{label(lang, 'exceptions')} ({len(items)})",
                        exceptions_table(items, names, options, False, stored) if items else None,
                        paragraphs=[] if items else [label(lang, "none")], status="" if items else "ok")]
    return ReportDoc(title, lang, _facts(run, items, options), [s for s in sections if s is not None], sign_off(lang))


def sign_off(lang: str) -> list[str]:
    return [label(lang, k) for k in ("prepared_by", "checked_by", "approved_by", "sign_date")]


def _entries(items: list[dict], lang: str) -> tuple[Table, Chart]:
    cols = [Column("kind", label(lang, "kind")), Column("status", label(lang, "status")),
            Column("count", label(lang, "count"), "count"), Column("amount", label(lang, "amount"), "money"),
            Column("key", "key", printed=False)]
    groups: dict[tuple[str, str], list[int]] = {}
    for i in items:
        g = groups.setdefault((i["kind"], i["status"]), [0, 0])
        g[0] += 1
        g[1] += bridge.signed(i)
    rows = [{"kind": label(lang, k), "status": label(lang, s), "count": n, "amount": fen, "key": f"{k}:{s}"}
            for (k, s), (n, fen) in sorted(groups.items())]
    totals = {"kind": label(lang, "total"), "count": len(items), "amount": sum(bridge.signed(i) for i in items)}
    by_kind: dict[str, dict[str, int]] = {}
    for (k, s), (_, fen) in groups.items():
        by_kind.setdefault(k, {})["matched" if s == "matched" else "open"] = fen
    chart = Chart("chart-entries", label(lang, "chart_entries"),
                  {"matched": label(lang, "series_matched"), "open": label(lang, "series_open")},
                  [(label(lang, k), [Bar("matched", v.get("matched", 0)), Bar("open", v.get("open", 0))])
                   for k, v in sorted(by_kind.items())])
    return Table("entries", cols, rows, totals), chart


def finance_run_doc(conn, run: dict, items: list[dict], options: ReportOptions) -> ReportDoc:
    lang = options.lang
    stored = stored_bank_names(conn)
    names = customer_names(conn, [i["customer_no"] for i in items])
    by_kind = bridge.collections_by_kind(items)
    cols = [Column("kind", label(lang, "kind")), Column("count", label(lang, "count"), "count"),
            Column("amount", label(lang, "amount"), "money"), Column("key", "key", printed=False)]
    rows = [{"kind": label(lang, k), "count": n, "amount": fen, "key": k} for k, (n, fen) in sorted(by_kind.items())]
    collections = Table("collections", cols, rows, {"kind": label(lang, "total"), "count": sum(r["count"] for r in rows),
                                                    "amount": sum(r["amount"] for r in rows)})
    entries, chart = _entries(items, lang)
    exceptions = [i for i in items if i["status"] != "matched"]
    table = exceptions_table(exceptions, names, options, True, stored)
    for row, i in zip(table.rows, exceptions):   # a remittance is a bank's: its name where a customer's would be
        if i["kind"] == "remittance":
            row["customer_name"] = bank_label(options, i["bank_code"], stored)
    sections = [bridge_section("bridge", label(lang, "bridge_finance"), bridge.finance_bridge(items), lang),
                Section("collections", label(lang, "collections_by_kind"), collections),
                Section("entries", label(lang, "entries"), entries, chart),
                Section("exceptions", f"{label(lang, 'exceptions')} ({len(exceptions)})", table if exceptions else None,
                        paragraphs=[] if exceptions else [label(lang, "none")], status="" if exceptions else "ok")]
    title = label(lang, "run_title_finance", run=run["run_id"])
    return ReportDoc(title, lang, _facts(run, items, options), sections, sign_off(lang))


def build_run_doc(conn, run_id: int, options: ReportOptions = ReportOptions()) -> tuple[dict, ReportDoc]:
    """(the run's row, its report)."""
    run, items = load_run(conn, run_id)
    build = bank_run_doc if run["kind"] == "bank" else finance_run_doc
    return run, build(conn, run, items, options)


def run_stem(run: dict) -> str:
    if run["kind"] == "bank":
        return f"recon_run_{run['run_id']}_{run['bank_code']}_{run['business_date']:%Y%m%d}"
    return f"recon_run_{run['run_id']}_finance"


def write_run_reports(engine: Engine, run_id: int, reports_dir) -> list[Path]:
    directory, options = split(reports_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        run, doc = build_run_doc(conn, run_id, options)
    return write_doc(doc, directory, run_stem(run))


def write_doc(doc: ReportDoc, directory: Path, stem: str) -> list[Path]:
    csv_path, html_path = directory / f"{stem}.csv", directory / f"{stem}.html"
    atomic_write(csv_path, render_csv(doc), "utf-8-sig")
    atomic_write(html_path, render_html(doc), "utf-8")
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

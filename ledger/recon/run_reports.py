"""Reconciliation reports for finance: per run (CSV + HTML) and per business date across banks.

HTML reports are self-contained: inline CSS and an inline SVG chart, no scripts, no external
resources (they open from a mail attachment or a file share offline). Amounts are yuan in HTML
and text, integer fen in CSV (exact, for spreadsheets and machines).

Run report files: ``recon_run_{id}_{bank}_{YYYYMMDD}.csv|.html`` (bank runs) and
``recon_run_{id}_finance.csv|.html``. The CSV has a summary block (``metric,count,amount_fen``),
a blank line, then one row per exception (every item not matched, with its details).
Day report: ``recon_day_{YYYYMMDD}.csv|.html`` and a text table (``render_day_text``).
Rejections: ``{file name}.rejected.csv`` (``line,field,reason``).
"""
from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy import Engine, func, select

from ledger.finance_reports import Report
from ledger.recon_tables import recon_items, recon_runs

ITEM_COLUMNS = ("item_id", "kind", "status", "bank_code", "business_date", "channel", "rrn", "customer_no",
                "bank_amount", "ledger_amount", "bank_status", "ledger_status", "payment_id", "debit_id", "line_no",
                "direction", "reference", "cheque_no", "counterparty", "detail", "resolution", "resolved_by", "note")

CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei",Arial,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #ccc}
.meta{color:#555;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:top} th{background:#e8eef6}
td.num{text-align:right;font-variant-numeric:tabular-nums} tr.open td{background:#fff3f0}
tr.resolved td{background:#f2f8f0} .ok{color:#1f7a1f;font-weight:bold} .bad{color:#b3261e;font-weight:bold}
svg text{font-family:Arial,sans-serif;font-size:12px}
"""


def yuan(fen) -> str:
    if fen is None:
        return ""
    fen = int(fen)
    whole, cents = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}{whole:,}.{cents:02d}"


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def bar_chart(groups: list[tuple[str, int, int]], title: str, unit: str = "") -> str:
    """Inline SVG: per group (label, matched, open) two horizontal bars, scaled to the largest."""
    width, bar_h, gap, label_w = 760, 16, 14, 170
    height = 40 + len(groups) * (2 * bar_h + gap) + 30
    top = max([1] + [max(m, o) for _, m, o in groups])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{_e(title)}"><rect width="100%" height="100%" fill="#fafafa" stroke="#ccc"/>',
           f'<text x="10" y="20" font-weight="bold">{_e(title)}</text>']
    y = 36
    scale = (width - label_w - 120) / top
    for label, matched, open_ in groups:
        out.append(f'<text x="10" y="{y + bar_h + 4}">{_e(label)}</text>')
        for i, (value, colour, name) in enumerate(((matched, "#2e7d32", "matched"), (open_, "#c62828", "open"))):
            w = max(1.0, value * scale) if value else 0
            yy = y + i * bar_h
            out.append(f'<rect x="{label_w}" y="{yy}" width="{w:.1f}" height="{bar_h - 2}" fill="{colour}"/>')
            out.append(f'<text x="{label_w + w + 6:.1f}" y="{yy + bar_h - 4}">{name} {value:,}{unit}</text>')
        y += 2 * bar_h + gap
    out.append(f'<rect x="{width - 150}" y="{height - 22}" width="10" height="10" fill="#2e7d32"/>'
               f'<text x="{width - 136}" y="{height - 13}">matched</text>'
               f'<rect x="{width - 76}" y="{height - 22}" width="10" height="10" fill="#c62828"/>'
               f'<text x="{width - 62}" y="{height - 13}">open</text></svg>')
    return "".join(out)


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<style>{CSS}</style></head><body>{body}</body></html>')


def _table(table_id: str, headers: list[str], rows: list[list], numeric: set[int] = frozenset(),
           row_classes: list[str] | None = None) -> str:
    out = [f'<table id="{table_id}"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes else ""
        out.append(f"<tr{cls}>" + "".join(f'<td class="num">{_e(v)}</td>' if j in numeric else f"<td>{_e(v)}</td>"
                                          for j, v in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _load_run(conn, run_id: int):
    run = conn.execute(select(recon_runs).where(recon_runs.c.run_id == run_id)).mappings().one()
    items = [dict(r) for r in conn.execute(select(recon_items).where(recon_items.c.run_id == run_id)
                                           .order_by(recon_items.c.item_id)).mappings()]
    return dict(run), items


def run_summary(run: dict, items: list[dict]) -> list[tuple[str, int, int | None]]:
    exceptions = [i for i in items if i["status"] != "matched"]
    open_ = [i for i in exceptions if i["status"] == "open"]

    def amount(i):
        return int(i["bank_amount"] if i["bank_amount"] is not None else (i["ledger_amount"] or 0))

    side = "statement" if run["kind"] == "finance" else "bank file"
    return [(f"{side} lines", run["bank_count"], run["bank_sum"]),
            ("ledger records" if run["kind"] == "bank" else "ledger matched", run["ledger_count"], run["ledger_sum"]),
            ("matched", run["matched_count"], run["matched_sum"]),
            ("exceptions", len(exceptions), sum(amount(i) for i in exceptions)),
            ("open", len(open_), sum(amount(i) for i in open_)),
            ("resolved", len(exceptions) - len(open_), sum(amount(i) for i in exceptions if i["status"] != "open"))]


def _chart_groups(run: dict, items: list[dict]) -> list[tuple[str, int, int]]:
    if run["kind"] == "bank":
        open_n = sum(1 for i in items if i["status"] == "open")
        return [(f"bank {run['bank_code']}", run["matched_count"] + sum(1 for i in items if i["status"] == "matched"), open_n)]
    groups: dict[str, list[int]] = {}
    for i in items:
        label = f"bank {i['bank_code']}" if i["bank_code"] else ("cheques" if i["kind"] == "cheque" else "other")
        g = groups.setdefault(label, [0, 0])
        g[0 if i["status"] == "matched" else 1] += 1
    return [(k, v[0], v[1]) for k, v in sorted(groups.items())]


def run_stem(run: dict) -> str:
    if run["kind"] == "bank":
        return f"recon_run_{run['run_id']}_{run['bank_code']}_{run['business_date']:%Y%m%d}"
    return f"recon_run_{run['run_id']}_finance"


def render_run_csv(run: dict, items: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["metric", "count", "amount_fen"])
    w.writerow(["run", run["run_id"], ""])
    for name, count, amount in run_summary(run, items):
        w.writerow([name, count, amount])
    w.writerow([])
    w.writerow(ITEM_COLUMNS)
    for i in items:
        if i["status"] != "matched":
            w.writerow(["" if i[c] is None else i[c] for c in ITEM_COLUMNS])
    return buf.getvalue()


def render_run_html(run: dict, items: list[dict]) -> str:
    title = (f"Reconciliation run {run['run_id']}: bank {run['bank_code']} {run['business_date']}"
             if run["kind"] == "bank" else f"Reconciliation run {run['run_id']}: finance statement")
    details = json.loads(run["details"] or "{}")
    summary = run_summary(run, items)
    exceptions = [i for i in items if i["status"] != "matched"]
    state = ('<span class="ok">everything matched</span>' if not exceptions
             else f'<span class="bad">{sum(1 for i in exceptions if i["status"] == "open")} open exception(s)</span>')
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="meta">file {_e(run["file_name"])} ({_e(run["file_format"])}), SHA-256 {_e(run["file_sha256"])}<br>'
            f'run by {_e(run["actor"])} at {run["finished_at"]:%Y-%m-%d %H:%M:%S} UTC — {state}</p>',
            "<h2>Totals</h2>",
            _table("totals", ["", "count", "amount (yuan)"], [[n, f"{c:,}", yuan(a)] for n, c, a in summary], {1, 2})]
    if run["kind"] == "bank" and details.get("channels"):
        rows = [[{"C": "counter", "D": "direct debit"}[ch], f"{v['matched']:,}", yuan(v["matched_sum"]), f"{v['matched_reversed']:,}"]
                for ch, v in sorted(details["channels"].items())]
        body.append(_table("channels", ["channel", "matched", "matched S sum (yuan)", "matched reversed"], rows, {1, 2, 3}))
    body.append("<h2>Matched vs open</h2>")
    body.append(bar_chart(_chart_groups(run, items), "matched vs open items by bank"))
    body.append(f"<h2>Exceptions ({len(exceptions)})</h2>")
    headers = ["item", "kind", "status", "bank", "date", "ch", "RRN / reference", "customer", "bank / statement",
               "ledger", "bank st.", "ledger st.", "payment", "debit", "line", "detail", "resolution"]
    rows, classes = [], []
    for i in exceptions:
        rows.append([i["item_id"], i["kind"], i["status"], i["bank_code"], i["business_date"], i["channel"],
                     i["rrn"] or i["reference"] or i["cheque_no"], i["customer_no"], yuan(i["bank_amount"]),
                     yuan(i["ledger_amount"]), i["bank_status"], i["ledger_status"], i["payment_id"], i["debit_id"],
                     i["line_no"], i["detail"],
                     f"{i['resolution']} by {i['resolved_by']}: {i['note']}" if i["resolution"] else ""])
        classes.append(i["status"])
    body.append(_table("exceptions", headers, rows, {8, 9}, classes) if rows else '<p class="ok" id="exceptions">none</p>')
    return _page(title, "".join(body))


def write_run_reports(engine: Engine, run_id: int, reports_dir: str | Path) -> list[Path]:
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    with engine.connect() as conn:
        run, items = _load_run(conn, run_id)
    stem = run_stem(run)
    csv_path, html_path = reports_dir / f"{stem}.csv", reports_dir / f"{stem}.html"
    _atomic_write(csv_path, render_run_csv(run, items), "utf-8-sig")
    _atomic_write(html_path, render_run_html(run, items), "utf-8")
    return [csv_path, html_path]


def write_rejection(file_name: str, errors: list[tuple], more: int, reports_dir: str | Path) -> list[Path]:
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"{file_name}.rejected.csv"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["line", "field", "reason"])
    for line, fld, reason in errors:
        w.writerow([line, fld, reason])
    if more:
        w.writerow(["", "-", f"... and {more} more errors"])
    _atomic_write(path, buf.getvalue(), "utf-8-sig")
    return [path]


def _atomic_write(path: Path, text: str, encoding: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding=encoding)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# The day across banks

DAY_COLUMNS = ("bank_code", "run_id", "file_name", "bank_lines", "bank_sum", "ledger_records", "ledger_sum",
               "matched", "matched_sum", "open", "open_sum", "resolved", "expected_remittance", "remittance")


@dataclass
class DayReport:
    business_date: date
    rows: list[dict] = field(default_factory=list)
    unreconciled_banks: list[str] = field(default_factory=list)   # banks with payments that day but no run

    def totals(self) -> dict:
        t = {c: sum(r[c] for r in self.rows) for c in DAY_COLUMNS if c not in ("bank_code", "run_id", "file_name", "remittance")}
        return {"bank_code": "total", "run_id": "", "file_name": "", "remittance": "", **t}

    def report(self) -> Report:
        """As a finance report (title, columns, amount columns, rows, total): the HTTP service's form."""
        return Report(f"Reconciliation of business date {self.business_date} (amounts in yuan)", list(DAY_COLUMNS),
                      {c for c in DAY_COLUMNS if c.endswith("_sum") or c == "expected_remittance"}, self.rows,
                      self.totals() if self.rows else None)


def day_report(engine: Engine, business_date: date) -> DayReport:
    from ledger.recon.match_queries import active_match_of_run, expected_remittance
    from ledger.schema import payments

    rep = DayReport(business_date)
    rr, ri = recon_runs.c, recon_items.c
    with engine.connect() as conn:
        runs = conn.execute(select(recon_runs).where(rr.kind == "bank", rr.business_date == business_date)
                            .order_by(rr.bank_code)).mappings().all()
        for run in runs:
            stats = {s: (int(n), int(a or 0)) for s, n, a in conn.execute(
                select(ri.status, func.count(), func.sum(func.coalesce(ri.bank_amount, ri.ledger_amount)))
                .where(ri.run_id == run["run_id"]).group_by(ri.status))}
            expected, _ = expected_remittance(conn, run["run_id"])
            match = active_match_of_run(conn, run["run_id"])
            rep.rows.append({"bank_code": run["bank_code"], "run_id": run["run_id"], "file_name": run["file_name"],
                             "bank_lines": run["bank_count"], "bank_sum": int(run["bank_sum"]),
                             "ledger_records": run["ledger_count"], "ledger_sum": int(run["ledger_sum"]),
                             "matched": run["matched_count"] + stats.get("matched", (0, 0))[0],
                             "matched_sum": int(run["matched_sum"]),
                             "open": stats.get("open", (0, 0))[0], "open_sum": stats.get("open", (0, 0))[1],
                             "resolved": stats.get("resolved", (0, 0))[0], "expected_remittance": expected,
                             "remittance": f"matched (match {match})" if match else "not matched"})
        seen = {r["bank_code"] for r in rep.rows}
        rep.unreconciled_banks = sorted(b for b in conn.execute(
            select(payments.c.bank_code).where(payments.c.business_date == business_date).distinct()).scalars() if b not in seen)
    return rep


def render_day_text(rep: DayReport) -> str:
    headers = ["bank", "run", "lines", "bank sum", "ledger", "ledger sum", "matched", "matched sum", "open",
               "open sum", "resolved", "remittance due", "remittance"]
    money = {3, 5, 7, 9, 11}

    def cells(r):
        vals = [r["bank_code"], r["run_id"], r["bank_lines"], r["bank_sum"], r["ledger_records"], r["ledger_sum"],
                r["matched"], r["matched_sum"], r["open"], r["open_sum"], r["resolved"], r["expected_remittance"],
                r["remittance"]]
        return [yuan(v) if i in money else str(v) for i, v in enumerate(vals)]

    body = [cells(r) for r in rep.rows] + ([cells(rep.totals())] if rep.rows else [])
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = [f"Reconciliation of business date {rep.business_date}",
             "  ".join(h.rjust(w) if i in money else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        lines.append("  ".join(c.rjust(w) if i in money else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    if not rep.rows:
        lines.append("(no bank file reconciled for this date)")
    if rep.unreconciled_banks:
        lines.append(f"banks with payments but no reconciled file: {', '.join(rep.unreconciled_banks)}")
    return "\n".join(lines) + "\n"


def render_day_csv(rep: DayReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(DAY_COLUMNS)
    for r in rep.rows + ([rep.totals()] if rep.rows else []):
        w.writerow([r[c] for c in DAY_COLUMNS])
    return buf.getvalue()


def render_day_html(rep: DayReport) -> str:
    title = f"Reconciliation of {rep.business_date}"
    rows = [[r["bank_code"], r["run_id"], r["file_name"], f"{r['bank_lines']:,}", yuan(r["bank_sum"]),
             f"{r['ledger_records']:,}", yuan(r["ledger_sum"]), f"{r['matched']:,}", yuan(r["matched_sum"]),
             f"{r['open']:,}", yuan(r["open_sum"]), f"{r['resolved']:,}", yuan(r["expected_remittance"]), r["remittance"]]
            for r in rep.rows + ([rep.totals()] if rep.rows else [])]
    body = [f"<h1>{_e(title)}</h1>", "<h2>By bank</h2>",
            _table("banks", ["bank", "run", "file", "lines", "bank sum", "ledger", "ledger sum", "matched", "matched sum",
                             "open", "open sum", "resolved", "remittance due", "remittance"], rows,
                   {3, 4, 5, 6, 7, 8, 9, 10, 11, 12}),
            "<h2>Matched vs open</h2>",
            bar_chart([(f"bank {r['bank_code']}", r["matched"], r["open"]) for r in rep.rows], "matched vs open lines by bank")]
    if rep.unreconciled_banks:
        body.append(f'<p class="bad">banks with payments but no reconciled file: {_e(", ".join(rep.unreconciled_banks))}</p>')
    return _page(title, "".join(body))


def write_day_reports(rep: DayReport, reports_dir: str | Path) -> list[Path]:
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    stem = f"recon_day_{rep.business_date:%Y%m%d}"
    paths = [reports_dir / f"{stem}.csv", reports_dir / f"{stem}.html"]
    _atomic_write(paths[0], render_day_csv(rep), "utf-8-sig")
    _atomic_write(paths[1], render_day_html(rep), "utf-8")
    return paths

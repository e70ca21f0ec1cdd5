"""Finance reports (``report.read``): a form per report of ledger/reports (catalogue.py), and the
report itself, built by the catalogue's ``build`` and written by its ``write``: as the report's own
self-contained HTML page (its chart and tables) or downloaded as CSV or XLSX. Read from the replica
where there is one, the request audited on the primary (api/routes/reports.py, ``built``).

The report page is the renderer's own (ledger/reports/render_html.py: inline CSS, an inline SVG
chart, no script). It is served with a Content Security Policy of its own that allows exactly its
style sheet (by the sha256 of ``render_html.CSS``) and nothing else: no script at all, no other
source, no framing. Every console page keeps the console's policy."""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import date, datetime

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from api.console.menu import ITEMS
from api.console.render import language, render
from api.console.viewer import Viewer, context_of, page
from api.deps import source_of
from api.routes.reports import built, chunks, spooled
from ledger.errors import Refused
from ledger.reports.catalogue import MEDIA_TYPES, REPORTS, ParameterError, ReportParams, file_name
from ledger.reports.render_html import CSS

router = APIRouter()
READ = page(*ITEMS["reports"].permissions)
FORMATS = ("html", "csv", "xlsx")
REPORT_CSP = ("default-src 'none'; style-src 'sha256-" + base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
              + "'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


@dataclass(frozen=True)
class Field:
    name: str         # ReportParams' attribute and the query's key
    kind: str         # date | month | period (a billing period YYYYMM) | text | number
    optional: bool = False


FIELDS: dict[str, tuple[Field, ...]] = {
    "confirmed": (Field("first", "date"), Field("last", "date")),
    "daily": (Field("date", "date"),),
    "monthly": (Field("month", "month"),),
    "month-end": (Field("month", "month"),),
    "aging": (Field("as_of", "date", True),),
    "arrears": (Field("as_of", "date", True), Field("district", "text", True), Field("min_days", "number", True)),
    "receivables": (Field("period", "period"),),
    "debits": (Field("date", "date"),),
    "recon-day": (Field("date", "date"),),
    "recon-run": (Field("run_id", "number"),),
}
assert set(FIELDS) == set(REPORTS), "a form for every report of the catalogue"


def params_of(name: str, query) -> ReportParams:
    """The report's parameters from the form's query; ParameterError for a value that is not one."""
    values = {}
    for f in FIELDS[name]:
        text = (query.get(f.name) or "").strip()
        if not text:
            continue
        try:
            if f.kind == "date":
                values[f.name] = date.fromisoformat(text)
            elif f.kind == "month":
                values[f.name] = datetime.strptime(text, "%Y-%m").date()
            elif f.kind == "period":
                values[f.name] = datetime.strptime(text, "%Y%m").strftime("%Y%m")
            elif f.kind == "number":
                values[f.name] = int(text)
            else:
                values[f.name] = text[:20]
        except ValueError:
            raise ParameterError(f"{f.name}: {text!r} is not a {f.kind}") from None
    return ReportParams(**values)


def defaults(ctx) -> dict[str, str]:
    today = ctx.clock.business_date()
    return {"date": today.isoformat(), "first": today.replace(day=1).isoformat(), "last": today.isoformat(),
            "month": today.strftime("%Y-%m"), "as_of": today.isoformat(), "district": "", "min_days": "1", "run_id": "",
            "period": today.strftime("%Y%m")}


@router.get("/reports")
def reports(request: Request, viewer: Viewer = Depends(READ)) -> Response:
    return render(request, "reports.html", viewer, fields=FIELDS, formats=FORMATS,
                  values=defaults(context_of(request)))


def _written(ctx, name: str, params: ReportParams, fmt: str, lang: str, actor: str, source: str):
    doc = built(ctx, name, params, actor, fmt, source)
    return spooled(doc, fmt, lang), file_name(doc, fmt)


@router.get("/reports/{name}")
async def report(request: Request, name: str, viewer: Viewer = Depends(READ)) -> Response:
    ctx = context_of(request)
    fmt = request.query_params.get("format", "html")
    if name not in FIELDS or fmt not in FORMATS:
        return render(request, "notfound.html", viewer, 404, what=("reports.unknown", {"name": name[:40]}))
    try:
        spool, file = await run_in_threadpool(_written, ctx, name, params_of(name, request.query_params), fmt,
                                              language(request)[0], viewer.principal.actor, source_of(request))
    except (ParameterError, Refused) as exc:
        return render(request, "reports.html", viewer, 422, fields=FIELDS, formats=FORMATS, values=defaults(ctx),
                      refused=str(exc))
    headers = {"Content-Disposition": f'{"inline" if fmt == "html" else "attachment"}; filename="{file}"'}
    if fmt == "html":
        headers["Content-Security-Policy"] = REPORT_CSP
    return StreamingResponse(chunks(spool), media_type=MEDIA_TYPES[fmt], headers=headers)

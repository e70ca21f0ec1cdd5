"""The reconciliation workbench: the files received and not yet reconciled (bank day files and
finance statements waiting in the drop directory's ``incoming/``), each with a start button, the
recent runs, and a run's result (its bridge, what matched and what is open, side by side).

"Start" takes the file the way the drop watcher's poll does (``DropWatcher.take``: recognised, checked,
reconciled by ``reconcile_bank_file`` / ``reconcile_statement``, moved to ``processed/`` or
``rejected/``, recorded in ``recon_drop_files``), as the signed-in operator: a bank file needs
``recon.run``, a statement ``statement.import`` (as ``gridpay recon bank`` / ``recon finance``).
The press itself is audited (``recon.start``: the file, its kind and what became of it). The form
names a file of ``incoming/`` only by its name, which must be one the watcher would take now."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path as FilePath

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from api.console.menu import ITEMS
from api.console.render import bank_names, render
from api.console.viewer import Viewer, checked_form, context_of, ensure, page
from api.deps import ApiContext, source_of
from ledger.audit import audit_row, write_audit
from ledger.errors import Refused
from ledger.recon import bridge
from ledger.recon.drop_files import MIB
from ledger.recon.lists import bank_runs_of, open_counts, run_page
from ledger.recon.manual import open_items
from ledger.recon.report_labels import label, options_of
from ledger.recon.run_reports import load_run
from ledger.recon.watch import Candidate, DropResult, DropWatcher

router = APIRouter()
READ = page(*ITEMS["recon"].permissions)
# who may start a file of each kind (the commands' permissions)
START = {"bank": "recon.run", "finance": "statement.import"}
RECENT_RUNS = 20
SHOWN = 500          # items a column lists; the bridge counts them all


@dataclass(frozen=True)
class Received:
    name: str
    kind: str                      # bank | finance
    size: int
    at: datetime                   # last modified
    bank_code: str | None = None
    business_date: date | None = None
    run_id: int | None = None      # a bank run already made for the file's bank and date


def watcher_for(ctx: ApiContext, actor: str) -> DropWatcher:
    """The drop directory's watcher as the site configures it, acting as ``actor``."""
    settings = ctx.settings
    return DropWatcher(ctx.engine, settings.drop_dir, actor=actor, clock=ctx.clock,
                       max_file_bytes=settings.watch.max_file_mib * MIB,
                       report_options=options_of(settings, clock=ctx.clock))


def named_date(stamp: str) -> date | None:
    """The business date a bank file's name gives (``YYYYMMDD``); None for a day that does not exist
    (the reconciliation refuses that file, with its reason, when it is started)."""
    try:
        return date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:]))
    except ValueError:
        return None


def waiting_files(ctx: ApiContext, watcher: DropWatcher) -> list[Received]:
    """Bank files and statements in ``incoming/`` that the watcher would take now."""
    found = []
    for c in watcher.pending():
        if c.kind not in START or c.refusal is not None:
            continue
        try:
            st = os.lstat(c.path)
        except FileNotFoundError:
            continue
        bank, day = c.path.stem.split("_") if c.kind == "bank" else (None, None)
        found.append(Received(c.path.name, c.kind, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc),
                              bank, day and named_date(day)))
    with ctx.engine.connect() as conn:
        made = bank_runs_of(conn, [(f.bank_code, f.business_date) for f in found if f.business_date])
    return [replace(f, run_id=made.get((f.bank_code, f.business_date))) for f in found]


def workbench_page(request: Request, viewer: Viewer, status: int = 200, **values) -> Response:
    ctx = context_of(request)
    incoming = FilePath(ctx.settings.drop_dir) / "incoming"
    # looking creates nothing: the watcher makes the drop directory's folders
    files = waiting_files(ctx, watcher_for(ctx, viewer.principal.actor)) if incoming.is_dir() else []
    with ctx.engine.connect() as conn:
        runs = run_page(conn, None, RECENT_RUNS)
        counts = open_counts(conn, [r["run_id"] for r in runs])
    may_start = {kind: viewer.principal.may(permission) for kind, permission in START.items()}
    return render(request, "recon.html", viewer, status, files=files, runs=runs, open_counts=counts,
                  may_start=may_start, drop=str(incoming), names=bank_names(ctx), **values)


@router.get("/recon")
def workbench(request: Request, viewer: Viewer = Depends(READ)) -> Response:
    return workbench_page(request, viewer)


def start_file(ctx: ApiContext, request: Request, actor: str, watcher: DropWatcher, kind: str,
               name: str) -> DropResult | None:
    """Reconcile one file of incoming/ as the watcher's poll does, audited; None when it is gone
    meanwhile (the watcher took it)."""
    result = watcher.take(Candidate(kind, watcher.incoming / name))
    if result is None:
        return None
    with ctx.engine.begin() as conn:
        write_audit(conn, [audit_row(ctx.now(), actor, "recon.start", "recon_file", name[:200], reason=result.message,
                                     kind=kind, outcome=result.outcome, ref=result.ref, source=source_of(request))])
    return result


@router.post("/recon/start")
async def start(request: Request, viewer: Viewer = Depends(READ), form: FormData = Depends(checked_form)) -> Response:
    ctx = context_of(request)
    name = str(form.get("file", ""))
    if not (FilePath(ctx.settings.drop_dir) / "incoming").is_dir():
        return await run_in_threadpool(workbench_page, request, viewer, 404, gone=name)
    watcher = watcher_for(ctx, viewer.principal.actor)
    waiting = {f.name: f for f in await run_in_threadpool(waiting_files, ctx, watcher)}
    if name not in waiting:
        return await run_in_threadpool(workbench_page, request, viewer, 404, gone=name)
    kind = waiting[name].kind
    await ensure(request, viewer, START[kind])
    result = await run_in_threadpool(start_file, ctx, request, viewer.principal.actor, watcher, kind, name)
    if result is None:
        return await run_in_threadpool(workbench_page, request, viewer, 404, gone=name)
    if result.outcome == "processed" and result.ref.startswith("run:"):
        return RedirectResponse(f"/console/recon/runs/{result.ref[4:]}?done=started", 303)
    return await run_in_threadpool(workbench_page, request, viewer, 422, outcome=result)


def run_view(ctx: ApiContext, run_id: int) -> dict | None:
    """The run, its bridge, its matched side (what matched automatically and the items matched or
    resolved since) and its open items (in the order the item page steps through them)."""
    with ctx.engine.connect() as conn:
        try:
            run, items = load_run(conn, run_id)
        except Refused:
            return None
    lines = bridge.bank_bridge(run, items) if run["kind"] == "bank" else bridge.finance_bridge(items)
    done = [i for i in items if i["status"] != "open"]
    open_ = open_items(ctx.engine, run_id=run_id)
    channels = json.loads(run["details"] or "{}").get("channels", {}) if run["kind"] == "bank" else {}
    return {"run": run, "bridge": lines, "adds_up": not any(ln.key == "unexplained" for ln in lines), "channels": sorted(channels.items()),
            "done": done[:SHOWN], "done_more": max(0, len(done) - SHOWN), "open": open_[:SHOWN],
            "open_more": max(0, len(open_) - SHOWN), "open_count": len(open_)}


@router.get("/recon/runs/{run_id}")
def run_result(request: Request, run_id: int = Path(ge=1, le=2**62), viewer: Viewer = Depends(READ)) -> Response:
    ctx = context_of(request)
    view = run_view(ctx, run_id)
    if view is None:
        return render(request, "notfound.html", viewer, 404, what=("recon.run.not_found", {"run": run_id}))
    done = request.query_params.get("done")
    return render(request, "recon_run.html", viewer, v=view, started=done == "started", label=label,
                  names=bank_names(ctx))

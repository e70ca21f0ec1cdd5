"""The day at a glance (``debit.read`` or ``report.read``: operations, finance, the auditor): each
bank's links, today's collections, what waits (unknown debits, reversals, reconciliation items by
age, the outbox) and the batches running, read in one snapshot (glance_data.py) from the replica
where there is one (``database.replica_url``: its figures may be a moment behind).

It refreshes itself: ``console.js`` fetches the fragment (``/console/glance/fragment``, the same
template's part) every ``REFRESH_S`` seconds and puts it in place; without script the page reloads
itself (``<noscript>`` meta refresh) and has a reload link. Nothing here writes."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.console.glance_data import glance
from api.console.menu import ITEMS
from api.console.render import bank_names, render
from api.console.viewer import Viewer, context_of, page

router = APIRouter()
READ = page(*ITEMS["glance"].permissions)
REFRESH_S = 10


def _read(ctx) -> dict:
    return {"g": glance(ctx.reads, ctx.settings, ctx.clock), "names": bank_names(ctx)}


async def _figures(request: Request) -> dict:
    """The figures and the banks' names, read in a worker thread."""
    return await run_in_threadpool(_read, context_of(request))


@router.get("/glance")
async def day_at_a_glance(request: Request, viewer: Viewer = Depends(READ)) -> Response:
    return render(request, "glance.html", viewer, refresh_s=REFRESH_S, **await _figures(request))


@router.get("/glance/fragment")
async def glance_fragment(request: Request, viewer: Viewer = Depends(READ)) -> Response:
    return render(request, "glance_figures.html", viewer, **await _figures(request))

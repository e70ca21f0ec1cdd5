"""Customer view: everything ``GET /v1/customers/{customer_no}`` answers (the same function builds
it), the red-reversal history of each bill beside it; and, for an operator with ``debit.single``, a
single real-time debit started by the same code as ``POST /v1/debits`` (idempotent: the form carries
its own key, so a second press of the button answers the same debit), then its outcome."""
from __future__ import annotations

import re
import uuid
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from api.console.menu import ITEMS
from api.console.render import render
from api.console.viewer import Viewer, checked_form, context_of, page
from api.idempotency import Idempotent, IdempotentRequest, body_digest
from api.problems import Problem
from api.routes.customer_models import CustomerSummary
from api.routes.customers import CUSTOMER_NO, customer_detail
from api.routes.debits import SingleDebitRequest, single_debit_view, start_single_debit
from ledger import customer_view as view
from ledger.schema import SINGLE_CHANNELS

router = APIRouter()
READ = page(*ITEMS["customers"].permissions)
DEBIT = page("debit.single")


NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,120}$")
MOBILE = re.compile(r"^[0-9]{11}$")


def search(ctx, name: str, mobile: str) -> list[CustomerSummary]:
    """``GET /v1/customers``' search (name contains, the whole mobile), its first page; mobiles masked."""
    with view.snapshot(ctx.engine) as conn:
        rows = view.search(conn, name=name or None, mobile=mobile or None, after=None,
                           limit=ctx.settings.api.page_limit_default)
    return [CustomerSummary.of(row) for row in rows]


@router.get("/customers")
def find(request: Request, viewer: Viewer = Depends(READ)) -> Response:
    """By number: straight to the customer; by name and/or mobile: the customers found."""
    asked = {key: request.query_params.get(key, "").strip() for key in ("customer_no", "name", "mobile")}
    if asked["customer_no"]:
        return RedirectResponse(f"/console/customers/{quote(asked['customer_no'], safe='')}", 303)
    if not (asked["name"] or asked["mobile"]):
        return render(request, "customers.html", viewer, asked=asked)
    if (asked["name"] and not NAME.match(asked["name"])) or (asked["mobile"] and not MOBILE.match(asked["mobile"])):
        return render(request, "customers.html", viewer, 422, asked=asked, bad_search=True)
    return render(request, "customers.html", viewer, asked=asked,
                  found=search(context_of(request), asked["name"], asked["mobile"]))


def customer_page(request: Request, viewer: Viewer, customer_no: str, status: int = 200, **values) -> Response:
    try:
        detail = customer_detail(context_of(request), customer_no)
    except Problem:
        return render(request, "customers.html", viewer, 404, missing=customer_no, asked={})
    return render(request, "customer.html", viewer, status, c=detail, channels=SINGLE_CHANNELS,
                  may_debit=viewer.principal.may("debit.single"), debit_key=uuid.uuid4().hex, **values)


@router.get("/customers/{customer_no}")
def customer(request: Request, customer_no: str = CUSTOMER_NO, viewer: Viewer = Depends(READ)) -> Response:
    return customer_page(request, viewer, customer_no)


@router.post("/customers/{customer_no}")
async def start_debit(request: Request, customer_no: str = CUSTOMER_NO, viewer: Viewer = Depends(DEBIT),
                      form: FormData = Depends(checked_form)) -> Response:
    ctx = context_of(request)
    try:
        body = SingleDebitRequest(customer_no=customer_no, bank_code=str(form.get("bank_code", "")) or None,
                                  channel=str(form.get("channel", "")), wait_s=ctx.settings.api.single_debit_wait_max_s)
    except ValidationError as exc:
        return await run_in_threadpool(customer_page, request, viewer, customer_no, 422,
                                       debit_error="; ".join(e["msg"] for e in exc.errors()))
    key = str(form.get("idempotency_key", "")) or uuid.uuid4().hex
    once = Idempotent(ctx, IdempotentRequest(viewer.principal.actor, key[:200], "POST", request.url.path,
                                             body_digest(body.model_dump_json().encode())))
    try:
        view, _replayed = await start_single_debit(ctx, viewer.principal, body, once)
    except Problem as exc:
        return await run_in_threadpool(customer_page, request, viewer, customer_no, exc.type.status,
                                       debit_error=exc.detail)
    return RedirectResponse(f"/console/debits/{view['debit_id']}", 303)


@router.get("/debits/{debit_id}")
def debit(request: Request, debit_id: int = Path(ge=1, le=2**62), viewer: Viewer = Depends(DEBIT)) -> Response:
    view = single_debit_view(context_of(request).engine, debit_id)
    if view is None:
        return render(request, "notfound.html", viewer, 404, what=("debit.not_found", {"debit": debit_id}))
    return render(request, "debit.html", viewer, d=view)

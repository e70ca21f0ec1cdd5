"""Single real-time debits: ``POST /v1/debits`` starts one for a customer's unpaid bills, with the
channel that asked (call centre, voice system, online banking, district office, counter), and waits
up to ``wait_s`` for the bank's answer; ``GET /v1/debits/{debit_id}`` polls it. Permission
``debit.single``.

The API never talks to a bank: ``engines.realtime.create_single_in`` writes the debit as a batch of
one in a chunk of the highest priority, and a running ``gridpay engine`` claims it at its next poll
(docs/debit-engines.md). The request waits by polling the database from the event loop (each read
in the thread pool), so a waiting request holds no worker thread.
"""
from __future__ import annotations

import asyncio
import json
from typing import Literal

from fastapi import APIRouter, Depends, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.deps import ApiContext, context, require
from api.idempotency import REPLAYED, Idempotent, idempotent
from api.json_types import UtcDateTime
from api.problems import Problem, problem_responses
from api.routes.customer_models import AttemptOut
from engines.realtime import MEANING, SingleRefused, create_single_in
from engines.tables import debit_reversals
from ledger.identity import Principal
from ledger.schema import SINGLE_CHANNELS, debit_attempts, debits

router = APIRouter(tags=["debits"], responses=problem_responses(400, 401, 403, 404, 409, 422))
SINGLE = require("debit.single")
FINAL = ("approved", "declined", "unknown", "reversed")
POLL_S = 0.05           # how often a waiting request reads the debit's state


class SingleDebitRequest(BaseModel):
    customer_no: str = Field(min_length=1, max_length=20, pattern=r"^[^\x00-\x1f\x7f/]+$")
    bank_code: str | None = Field(None, min_length=1, max_length=11, pattern=r"^[0-9]+$",
                                  description="the bank of the agreement (default: the customer's active one)")
    channel: Literal[SINGLE_CHANNELS] = Field(description="who asks for it (recorded on the debit)")
    wait_s: float = Field(0, ge=0, description="seconds to wait for the bank's answer in this request "
                          "(cut to api.single_debit_wait_max_s); 0: answer at once and poll Location")


class ReversalOut(BaseModel):
    state: str = Field(description="pending (under way), answered, refused or unanswered")
    attempts: int = Field(description="0420 and 0421s sent")
    response_code: str | None


class SingleDebitOut(BaseModel):
    debit_id: int
    customer_no: str
    bank_code: str
    channel: str
    amount_fen: int
    outcome: str = Field(description="approved; declined (see response_code, reason); unknown (no answer: "
                         "a reversal is under way); reversed (the reversal was answered: nothing taken); "
                         "pending (no answer yet: poll Location)")
    state: str = Field(description="the debit's own state: pending, sent, approved, declined, unknown, reversed")
    response_code: str | None
    reason: str | None = Field(description="what the bank's response code means; for unknown, "
                               "'reversal under way' while the reversal is")
    approval_code: str | None
    rrn: str | None
    created_at: UtcDateTime
    updated_at: UtcDateTime
    reversal: ReversalOut | None
    attempts: list[AttemptOut]


def outcome_of(state: str) -> str:
    return state if state in FINAL else "pending"


def reason_of(row, reversal) -> str | None:
    if row.state == "declined":
        return MEANING.get(row.response_code or "", "declined")
    if row.state == "unknown":
        if reversal is not None and reversal.state == "unanswered":
            return "reversal unanswered: open for reconciliation"
        return "reversal under way"
    if row.state == "reversed":
        return "reversed: nothing was taken from the account"
    return None


def single_debit_view(engine, debit_id: int) -> dict | None:
    """The debit with its attempts and reversal, as the API shows it (None: no such debit)."""
    d, r = debits.c, debit_reversals.c
    with engine.connect() as conn:
        row = conn.execute(select(debits).where(d.debit_id == debit_id)).first()
        if row is None:
            return None
        reversal = conn.execute(select(r.state, r.attempts, r.response_code).where(r.debit_id == debit_id)).first()
        attempts = conn.execute(select(debit_attempts).where(debit_attempts.c.debit_id == debit_id)
                                .order_by(debit_attempts.c.id)).mappings().all()
    return SingleDebitOut(
        debit_id=row.debit_id, customer_no=row.customer_no, bank_code=row.bank_code, channel=row.channel,
        amount_fen=row.amount, outcome=outcome_of(row.state), state=row.state, response_code=row.response_code,
        reason=reason_of(row, reversal), approval_code=row.approval_code, rrn=row.rrn, created_at=row.created_at,
        updated_at=row.updated_at, reversal=ReversalOut(**reversal._mapping) if reversal else None,
        attempts=[AttemptOut(**{k: a[k] for k in AttemptOut.model_fields}) for a in attempts],
    ).model_dump(mode="json")


async def wait_for_outcome(ctx: ApiContext, debit_id: int, wait_s: float) -> dict:
    """Poll the database until the debit has an outcome or ``wait_s`` has passed (real time: the
    one clock's monotonic reading), without holding a thread while asleep."""
    deadline = ctx.clock.monotonic() + wait_s
    while True:
        view = await run_in_threadpool(single_debit_view, ctx.engine, debit_id)
        if view["state"] in FINAL or ctx.clock.monotonic() >= deadline:
            return view
        await asyncio.sleep(min(POLL_S, max(0.0, deadline - ctx.clock.monotonic())))


def refusal(exc: SingleRefused) -> Problem:
    if exc.reason == "customer-unknown":
        return Problem("not-found", str(exc))
    if exc.reason == "debit-in-flight":
        return Problem("debit-in-flight", str(exc), headers={"Retry-After": "1"})
    return Problem("refused", str(exc), reason=exc.reason)


async def start_single_debit(ctx: ApiContext, principal: Principal, body: SingleDebitRequest,
                             once: Idempotent) -> tuple[dict, bool]:
    """Start the debit once per idempotency key and wait up to ``body.wait_s`` (cut to
    ``api.single_debit_wait_max_s``) for its outcome: (the debit as ``single_debit_view`` shows it,
    whether the answer was replayed). The console's single debit takes this path too."""
    def change(conn, now):
        try:
            single = create_single_in(conn, ctx.settings, body.customer_no, bank_code=body.bank_code, now=now,
                                      actor=principal.actor, channel=body.channel)
        except SingleRefused as exc:
            raise refusal(exc) from None
        return 201, {"debit_id": single.debit_id}

    first = await run_in_threadpool(once.run, change)
    debit_id = json.loads(first.body)["debit_id"]
    view = await wait_for_outcome(ctx, debit_id, min(body.wait_s, ctx.settings.api.single_debit_wait_max_s))
    return view, REPLAYED in first.headers


@router.post("/v1/debits", status_code=201, response_model=SingleDebitOut)
async def post_debit(body: SingleDebitRequest, principal: Principal = Depends(SINGLE),
                     once: Idempotent = Depends(idempotent), ctx: ApiContext = Depends(context)):
    """Start a single real-time debit of the customer's unpaid bills and wait up to ``wait_s`` for
    the bank's answer. 201 with the outcome (pending when none came in time) and ``Location``."""
    view, replayed = await start_single_debit(ctx, principal, body, once)
    headers = {"Location": f"/v1/debits/{view['debit_id']}"}
    if replayed:
        headers[REPLAYED] = "true"
    return JSONResponse(view, 201, headers=headers)


@router.get("/v1/debits/{debit_id}", response_model=SingleDebitOut)
def get_debit(debit_id: int = Path(ge=1), principal: Principal = Depends(SINGLE),
              ctx: ApiContext = Depends(context)):
    """A debit's outcome now, with its attempts and its reversal (poll a pending one)."""
    view = single_debit_view(ctx.engine, debit_id)
    if view is None:
        raise Problem("not-found", f"no debit {debit_id}")
    return view

"""An item of the workbench: the item and its ranked candidates from the other side, side by side
(``GET /v1/recon/items/{id}/candidates``' function, ledger.recon.manual.show_item), and what an
operator with ``recon.match`` does with it: tick one or several candidates to match (many to one),
undo a match, resolve with a reason. Each change is the API route's own function
(``api.routes.recon``: ``post_match``, ``undo_match``, ``resolve``) with the form's idempotency key,
so it is the ledger's change as the API makes it, audited with the signed-in operator, and a second
press of a button answers the first change again instead of making another."""
from __future__ import annotations

import json
import re
import uuid
from typing import Callable

from fastapi import APIRouter, Depends, Path, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from api.console.recon import READ
from api.console.i18n import translator
from api.console.render import language, render
from api.console.viewer import Viewer, checked_form, context_of, page
from api.idempotency import Idempotent, IdempotentRequest, body_digest
from api.problems import Problem
from api.routes.recon import MatchRequest, ResolutionRequest, UndoRequest, post_match, resolve, undo_match
from ledger.errors import Refused
from ledger.recon.manual import open_items, show_item
from ledger.recon.report_details import describe
from ledger.recon.report_labels import label
from ledger.recon.resolutions import ACTIONS

router = APIRouter()
MATCH = page("recon.match")
ITEM_ID, MATCH_ID = Path(ge=1, le=2**62), Path(ge=1, le=2**62)   # one per name: FastAPI names a Path by its use
DONE = ("matched", "undone", "resolved")
PICKED = {"item": "item_ids", "payment": "payment_ids", "run": "run_ids"}   # a ticked candidate: "<type>:<id>"


WHY = ((re.compile(r"^same amount$"), "recon.why.amount"), (re.compile(r"^same date$"), "recon.why.date"),
       (re.compile(r"^(?P<days>\d+) day\(s\) apart$"), "recon.why.days"),
       (re.compile(r"^same customer$"), "recon.why.customer"), (re.compile(r"^same reference$"), "recon.why.reference"),
       (re.compile(r"^(?P<count>\d+) open exception\(s\)$"), "recon.why.open"))


def why_words(t) -> Callable[[str], str]:
    """The ranking's reasons (show_item's ``why``: English phrases) in the page's language."""
    def words(why: str) -> str:
        out = []
        for phrase in re.split(r"[,;] ", why):
            found = next(((m, key) for pattern, key in WHY if (m := pattern.match(phrase.strip()))), None)
            out.append(t(found[1], **found[0].groupdict()) if found else phrase)
        return t("recon.why.join").join(p for p in out if p)

    return words


def neighbours(engine, item: dict) -> tuple[int | None, int | None]:
    """The run's open items before and after this one (in the run page's order)."""
    ids = [i["item_id"] for i in open_items(engine, run_id=item["run_id"])]
    if item["item_id"] not in ids:
        return (ids[-1] if ids else None), (ids[0] if ids else None)
    at = ids.index(item["item_id"])
    return (ids[at - 1] if at else None), (ids[at + 1] if at + 1 < len(ids) else None)


def item_page(request: Request, viewer: Viewer, item_id: int, status: int = 200, **values) -> Response:
    ctx = context_of(request)
    try:
        shown = show_item(ctx.engine, item_id)
    except Refused:
        return render(request, "notfound.html", viewer, 404, what=("recon.item.not_found", {"item": item_id}))
    previous, following = neighbours(ctx.engine, shown["item"])
    lang, _ = language(request)
    return render(request, "recon_item.html", viewer, status, i=shown["item"], match=shown["match"],
                  candidates=shown["candidates"], previous=previous, following=following,
                  may_match=viewer.principal.may("recon.match"), actions=ACTIONS, form_key=uuid.uuid4().hex,
                  label=label, describe=describe, why=why_words(translator(lang)),
                  **values)


@router.get("/recon/items/{item_id}")
def item(request: Request, item_id: int = ITEM_ID, viewer: Viewer = Depends(READ)) -> Response:
    done = request.query_params.get("done")
    return item_page(request, viewer, item_id, **({"done": done} if done in DONE else {}))


def change(request: Request, viewer: Viewer, form: FormData, route, body, **path) -> tuple[dict | None, str]:
    """The API route's change with the form's idempotency key: (its answer, "") or (None, why not)."""
    ctx = context_of(request)
    key = str(form.get("idempotency_key", ""))[:200] or uuid.uuid4().hex
    once = Idempotent(ctx, IdempotentRequest(viewer.principal.actor, key, "POST", request.url.path,
                                             body_digest(body.model_dump_json().encode())))
    try:
        answer = route(body, principal=viewer.principal, once=once, ctx=ctx, **path)
    except Refused as exc:
        return None, str(exc)
    except Problem as exc:
        return None, exc.detail
    return json.loads(answer.body), ""


def picked(form: FormData, item_id: int) -> dict[str, list[int]]:
    """The item and the ticked candidates, by kind (a malformed value is left out)."""
    out: dict[str, list[int]] = {"item_ids": [item_id], "payment_ids": [], "run_ids": []}
    for value in form.getlist("pick"):
        kind, _, number = str(value).partition(":")
        if kind in PICKED and number.isascii() and number.isdigit() and 0 < int(number) <= 2**62:
            out[PICKED[kind]].append(int(number))
    return out


async def answered(request: Request, viewer: Viewer, item_id: int, made: tuple[dict | None, str], done: str) -> Response:
    answer, why = made
    if answer is None:
        return await run_in_threadpool(item_page, request, viewer, item_id, 422, why=why)
    return RedirectResponse(f"/console/recon/items/{item_id}?done={done}", 303)


@router.post("/recon/items/{item_id}/match")
async def match(request: Request, item_id: int = ITEM_ID, viewer: Viewer = Depends(MATCH),
                form: FormData = Depends(checked_form)) -> Response:
    try:
        body = MatchRequest(**picked(form, item_id), note=str(form.get("note", "")).strip())
    except ValidationError as exc:
        return await answered(request, viewer, item_id, (None, "; ".join(e["msg"] for e in exc.errors())), "")
    made = await run_in_threadpool(change, request, viewer, form, post_match, body)
    return await answered(request, viewer, item_id, made, "matched")


@router.post("/recon/matches/{match_id}/undo")
async def undo(request: Request, match_id: int = MATCH_ID, viewer: Viewer = Depends(MATCH),
               form: FormData = Depends(checked_form)) -> Response:
    given = str(form.get("item_id", ""))
    item_id = int(given) if given.isascii() and given.isdigit() and 0 < int(given) <= 2**62 else 0
    try:
        body = UndoRequest(reason=str(form.get("reason", "")).strip())
    except ValidationError:
        return await run_in_threadpool(item_page, request, viewer, item_id, 422, why_key="recon.reason_needed")
    made = await run_in_threadpool(change, request, viewer, form, undo_match, body, match_id=match_id)
    return await answered(request, viewer, item_id, made, "undone")


@router.post("/recon/items/{item_id}/resolve")
async def resolve_item(request: Request, item_id: int = ITEM_ID, viewer: Viewer = Depends(MATCH),
                       form: FormData = Depends(checked_form)) -> Response:
    if not str(form.get("reason", "")).strip():
        return await run_in_threadpool(item_page, request, viewer, item_id, 422, why_key="recon.reason_needed")
    try:
        body = ResolutionRequest(action=str(form.get("action", "")), reason=str(form.get("reason", "")).strip(),
                                 method=str(form.get("method", "01")), cheque_no=str(form.get("cheque_no", "")) or None)
    except ValidationError as exc:
        return await answered(request, viewer, item_id, (None, "; ".join(e["msg"] for e in exc.errors())), "")
    made = await run_in_threadpool(change, request, viewer, form, resolve, body, item_id=item_id)
    return await answered(request, viewer, item_id, made, "resolved")

"""The operations endpoints every gridpay process has: ``/healthz`` (the process answers),
``/readyz`` (and its database does: runtime/db_probe.py), ``/metrics`` (Prometheus). No
authentication: HAProxy and Prometheus call them (the HAProxy example keeps /metrics inside)."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from api.deps import ApiContext, context
from runtime.db_probe import probe

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="up")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(ctx: ApiContext = Depends(context)):
    try:
        probe(ctx.engine)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        ctx.metrics.db_up.set(0)
        return JSONResponse({"status": "not ready", "database": f"unreachable: {type(exc).__name__}"}, 503)
    ctx.metrics.db_up.set(1)
    return Readiness(status="ready", database="ok")


@router.get("/metrics", include_in_schema=False)
def metrics(ctx: ApiContext = Depends(context)) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

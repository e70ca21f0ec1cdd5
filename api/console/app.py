"""The console as a sub-application of the operations API, mounted at ``/console``: its pages, its
static files (``static/``: the style sheet and one small script, no build chain, no CDN), the
security headers of every answer (protection.py) and the answers to refusals: no live session ->
the sign-in page (saying why), a permission or CSRF refusal -> a 403 page, an unknown path -> 404."""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from api.console import approvals, customers, glance, home, plans, recon, recon_items, reports, signin
from api.console.protection import SESSION_COOKIE, forget_cookie, secure_headers
from api.console.render import render
from api.console.viewer import PageRefused, SignInNeeded
from api.deps import ApiContext

PREFIX = "/console"
STATIC = Path(__file__).resolve().parent / "static"
ROUTERS = (signin.router, home.router, approvals.router, customers.router,
           glance.router, plans.router, reports.router, recon.router, recon_items.router)


def console_app(context: ApiContext) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.context = context
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(SignInNeeded, _sign_in_again)
    app.add_exception_handler(PageRefused, _refused)
    app.add_exception_handler(StarletteHTTPException, _not_found)
    app.add_exception_handler(RequestValidationError, _not_found)
    app.middleware("http")(_headers)
    return app


def install(api: FastAPI) -> None:
    """Mount the console on the operations API (it shares the API's context: engine, clock, metrics)."""
    api.mount(PREFIX, console_app(api.state.context), name="console")


async def _headers(request: Request, call_next) -> Response:
    response = await call_next(request)
    secure_headers(response, page=not request.url.path.startswith(f"{PREFIX}/static/"))
    return response


async def _sign_in_again(request: Request, exc: SignInNeeded) -> Response:
    response = RedirectResponse(f"{PREFIX}/sign-in?m={exc.reason}", 303)
    forget_cookie(response, request, SESSION_COOKIE)
    return response


async def _refused(request: Request, exc: PageRefused) -> Response:
    return render(request, "refused.html", getattr(request.state, "viewer", None), 403, kind=exc.kind, permission=exc.permission)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    return render(request, "notfound.html", getattr(request.state, "viewer", None), status if status in (404, 405) else 404,
                  what=("notfound.title", {}))

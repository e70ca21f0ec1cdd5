"""The home page: who is signed in, their roles, the pages their roles open and the shortcuts; for
an operator who may see the day at a glance (operations, finance, the auditor) the glance itself."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.console import glance
from api.console.menu import ITEMS
from api.console.render import render
from api.console.viewer import Viewer, page

router = APIRouter()


@router.get("/")
async def home(request: Request, viewer: Viewer = Depends(page())) -> Response:
    if ITEMS["glance"].open_to(viewer.principal):
        return await glance.day_at_a_glance(request, viewer)
    return render(request, "home.html", viewer)

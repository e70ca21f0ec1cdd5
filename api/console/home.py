"""The home page: who is signed in, their roles, the pages their roles open and the shortcuts."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from api.console.render import render
from api.console.viewer import Viewer, page

router = APIRouter()


@router.get("/")
def home(request: Request, viewer: Viewer = Depends(page())) -> Response:
    return render(request, "home.html", viewer)

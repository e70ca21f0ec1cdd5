"""``/docs``: Swagger UI from files installed with gridpay (the swagger-ui-py package's copy of
Swagger UI 5, which reads OpenAPI 3.1), not from a CDN: the utility's network has no Internet."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/docs/static"


def swagger_ui_files() -> Path:
    """Swagger UI's directory, found without importing swagger-ui-py (its own code is for other
    web frameworks; only its static files are used)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: reinstall gridpay")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install(app: FastAPI) -> None:
    app.mount(STATIC_URL, StaticFiles(directory=swagger_ui_files()), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{STATIC_URL}/favicon-32x32.png")

"""The problem types: docs/api.md's table is ``api.problems.TYPES`` (slug and status), and the
service answers a path or method it does not have with a problem document too."""
from __future__ import annotations

import re
from pathlib import Path

from api.problems import BASE, TYPES
from api_harness import running_service

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def documented_types() -> dict[str, int]:
    rows = re.findall(r"^\| `([a-z-]+)` \| (\d{3}) \|", DOC.read_text(encoding="utf-8"), flags=re.M)
    return {slug: int(status) for slug, status in rows}


def test_the_documented_problem_types_are_the_codes():
    assert documented_types() == {slug: t.status for slug, t in TYPES.items()}


def test_unknown_paths_and_methods_are_problems(sqlite_url):
    with running_service(sqlite_url) as service, service.client() as http:
        missing = http.get("/v2/nothing")
        assert missing.status_code == 404 and missing.json()["type"] == BASE + "not-found"
        assert missing.headers["content-type"] == "application/problem+json"
        wrong = http.put("/healthz")
        assert wrong.status_code == 405 and wrong.json()["type"] == BASE + "method-not-allowed"
        document = http.get("/openapi.json").json()
        assert "ProblemDoc" in document["components"]["schemas"]
        assert "HTTPValidationError" not in document["components"]["schemas"], "FastAPI's 422 body is replaced"
        page = http.get("/docs")
        assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text
        assert "cdn." not in page.text, "served from gridpay itself: the site's network has no Internet"
        bundle = http.get("/docs/static/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and len(bundle.content) > 500_000
        assert http.get("/docs/static/swagger-ui.css").status_code == 200

"""One router per area. A new area: a module here with its ``router`` (its endpoints each depend on
``api.deps.require(permission)``; changing POSTs also on ``api.idempotency.idempotent``), and a line
in ``ROUTERS``. tests/test_api_access.py then checks every role on its routes by itself."""
from __future__ import annotations

from api.routes import auth, corrections, customers, debits, feed, ops, plans, recon, refunds, reports

ROUTERS = (ops.router, auth.router, customers.router, refunds.router, corrections.router, recon.router,
           plans.router, reports.router, feed.router, debits.router)

# Routes without authentication, on purpose (everything else must depend on ``require``).
PUBLIC = {"/healthz", "/readyz", "/metrics", "/v1/sessions", "/openapi.json", "/docs", "/docs/static",
          "/docs/oauth2-redirect", "/redoc"}

"""The operations HTTP API (`gridpay api`, docs/api.md): a FastAPI application over the one database.

Module map (each file one job):

- ``app``: ``create_app(settings, engine, clock)``, the application factory: routers, handlers, metrics;
- ``deps``: what endpoints depend on: the service's context (engine, clock, settings), the
  authenticated principal (``Authorization: Bearer``), ``require(permission)``;
- ``problems``: RFC 9457 problem documents, one ``type`` per error, and the one exception handler;
- ``pagination``: opaque cursors and the page size;
- ``idempotency``: ``Idempotency-Key`` on every POST that changes something (table ``api_idempotency``);
- ``throttle``: log-in attempts per client address;
- ``metrics``: requests and latency by route template and status, on the registry /metrics serves;
- ``tables``: ``api_idempotency`` (migration 0010);
- ``routes/``: one router per area (``auth``, ``customers``, ``refunds``, ``corrections``, ``recon``,
  ``plans`` (plans and batches), ``reports``, ``feed``, ``ops``); adding an area is a new module there
  and one line in ``routes.ROUTERS``.
"""

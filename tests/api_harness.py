"""Shared by the API tests: a real uvicorn server (the one `gridpay api` builds) in a thread on a
free port, over a migrated database, with a clock the test moves (``twisted.internet.task.Clock``
as the one clock's timer), operators of every role and httpx clients.

The server thread is the same ``server_for`` configuration the command runs; only the clock and
the Argon2 parameters (fast, for tests that hash many passwords) differ.
"""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Iterator

import httpx
from twisted.internet import task

from api.app import create_app
from config.clock import Clock
from config.settings import ApiConfig, Settings
from gridpay.api_command import listening_socket, server_for
from identity_helpers import ADMIN, FAST, PASSWORD
from ledger import migrate
from ledger.db import make_engine
from ledger.identity import ROLES, add_client, add_first_admin, add_key, add_operator
from ledger.identity.roles import OPERATOR_ONLY

T0 = datetime.fromisoformat("2026-12-01T02:00:00+00:00")   # 10:00 in Shanghai


def operator_name(role: str) -> str:
    return f"op-{role}"


class Service:
    """A running API: its base URL, the clock to move, its engine and metrics registry."""

    def __init__(self, base_url: str, timer: task.Clock, engine, app):
        self.base_url, self.timer, self.engine, self.app = base_url, timer, engine, app
        self.registry = app.state.context.metrics.registry

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def advance(self, delta: timedelta) -> None:
        self.timer.advance(delta.total_seconds())

    def login(self, user: str, password: str = PASSWORD) -> str:
        with self.client() as http:
            answer = http.post("/v1/sessions", json={"user": user, "password": password})
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]

    def metric(self, name: str, labels: dict) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def add_every_role(engine) -> None:
    """root (administrator) and one operator per role, ``op-<role>``."""
    with engine.begin() as conn:
        add_first_admin(conn, T0, "root", "Root Admin", PASSWORD, "tester", FAST)
        for role in ROLES:
            add_operator(conn, T0, ADMIN, operator_name(role), role.title(), [role], PASSWORD, FAST)


def add_client_with_key(engine, name: str, scopes, days: int = 30) -> str:
    with engine.begin() as conn:
        add_client(conn, T0, ADMIN, name, name.title())
        key, _key_id = add_key(conn, T0, ADMIN, name, sorted(set(scopes) - OPERATOR_ONLY), T0 + timedelta(days=days),
                               FAST)
    return key


@contextmanager
def running_service(url: str, api: ApiConfig | None = None, settings: Settings | None = None,
                    reads=None) -> Iterator[Service]:
    """A migrated database at ``url`` with every role's operator, and the API serving it (with
    ``settings``' banks when given: the single debits need them; ``reads``: the engine of its
    replica, for the reports and the day at a glance)."""
    migrate.upgrade(url)
    engine = make_engine(url)
    add_every_role(engine)
    timer = task.Clock()
    timer.advance(T0.timestamp())
    settings = (settings or Settings()).model_copy(update={"access": FAST, "api": api or ApiConfig()})
    app = create_app(settings, engine, Clock(timer=timer), reads=reads)
    sock = listening_socket("127.0.0.1", 0)
    server = server_for(app, settings.api, "WARNING")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api-server", daemon=True)
    thread.start()
    try:
        while not server.started:          # the server says when it listens; nothing is timed
            if not thread.is_alive():
                raise RuntimeError("the API server did not start")
            threading.Event().wait(0.01)
        yield Service(f"http://127.0.0.1:{sock.getsockname()[1]}", timer, engine, app)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()
        engine.dispose()


def signed_in_client(service: Service, user: str) -> httpx.Client:
    """An HTTP client signed in to the console by its form (cookies kept by the client)."""
    http = service.client()
    form = http.get("/console/sign-in")
    token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form.text).group(1)
    answer = http.post("/console/sign-in", data={"user": user, "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/", answer.text
    return http


def post_and_retry(http: httpx.Client, path: str, body: dict | None = None) -> httpx.Response:
    """POST with a new Idempotency-Key, then again with the same key: the retry must get the same
    answer, marked replayed (it changed nothing). Returns the first answer."""
    import uuid

    headers = {"Idempotency-Key": uuid.uuid4().hex}
    first = http.post(path, json=body, headers=headers)
    if first.status_code < 300:
        again = http.post(path, json=body, headers=headers)
        assert (again.status_code, again.json()) == (first.status_code, first.json()), again.text
        assert again.headers.get("Idempotent-Replayed") == "true"
    return first

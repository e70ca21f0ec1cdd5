"""``gridpay api``: the operations HTTP API in a process of its own (docs/api.md).

One uvicorn worker per process: scale by running more processes (the systemd template
``gridpay-api@N`` listens on ``api.port + N``) behind HAProxy (config/haproxy/gridpay-api.cfg).
SIGTERM (or SIGINT) stops taking connections, lets the requests in hand finish for up to
``api.graceful_timeout_s`` and exits (uvicorn's own signal handling).
"""
from __future__ import annotations

import logging
import socket
import sys

import click

from gridpay.options import config_option, require_schema


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound before uvicorn starts, so that port 0 gives a port we can print."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it (Linux): uvicorn, handed a socket, does not set it, and its
    # answers (headers, then body: two writes) then waited out the client's delayed ACK, 40 ms each
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def server_for(app, api, log_level: str):
    """A uvicorn server for ``app`` with ``[api]``'s TLS, proxy and shutdown settings."""
    import uvicorn

    config = uvicorn.Config(
        app, workers=1, log_config=None, log_level=log_level.lower(), access_log=False, lifespan="off",
        ssl_certfile=api.tls_cert_file or None, ssl_keyfile=api.tls_key_file or None,
        proxy_headers=True, forwarded_allow_ips=",".join(api.trusted_proxies),
        timeout_graceful_shutdown=int(api.graceful_timeout_s), server_header=False)
    return uvicorn.Server(config)


@click.command()
@config_option
@click.option("--instance", type=click.IntRange(0, 999), default=0, show_default=True,
              help="this API process's number on its host (systemd: gridpay-api@N); it listens on api.port + N")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def api(config_path, instance, log_level):
    """Run the operations HTTP API until SIGTERM."""
    from api.app import create_app
    from config import load_settings
    from config.clock import Clock
    from config.key_files import check_key_file
    from ledger.db import make_engine
    from runtime.logging_setup import setup_logging

    settings = load_settings(config_path)
    setup_logging(settings.api.log_file, getattr(logging, log_level))
    if settings.api.tls_key_file:   # refused at start, not at the first handshake
        check_key_file("api.tls_key_file", settings.api.tls_key_file, settings.key_file_permissions)
    url = settings.database_url()
    require_schema(url)
    engine = make_engine(url, pool_size=settings.database.pool_size,
                         statement_timeout_s=settings.database.statement_timeout_s)
    replica = settings.replica_url()
    reads = make_engine(replica, pool_size=settings.database.pool_size,
                        statement_timeout_s=settings.database.statement_timeout_s) if replica else engine
    port = settings.api.port + instance if settings.api.port else 0
    sock = listening_socket(settings.api.host, port)
    scheme = "https" if settings.api.tls_cert_file else "http"
    host, bound = sock.getsockname()[:2]
    app = create_app(settings, engine, Clock.of(settings.business), reads=reads)
    click.echo(f"gridpay api listening on {scheme}://{host}:{bound} (docs: /docs, metrics: /metrics)")
    sys.stdout.flush()
    try:
        server_for(app, settings.api, log_level).run(sockets=[sock])
    finally:
        sock.close()
        engine.dispose()
        reads.dispose()

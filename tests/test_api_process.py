"""``gridpay api`` as a real child process: HTTPS with the configured certificate (the console's
cookies Secure), ready when its database answers, a clean exit on SIGTERM; a private key others may read stops the start."""
from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys

import httpx

from ledger import migrate
from test_ops_deploy import _self_signed_pem

LISTENING = re.compile(r"gridpay api listening on (?P<scheme>https?)://127\.0\.0\.1:(?P<port>\d+)")


def environment(db_url: str, **api) -> dict[str, str]:
    env = {**os.environ, "GRIDPAY_DATABASE__URL": db_url, "GRIDPAY_API__HOST": "127.0.0.1", "GRIDPAY_API__PORT": "0"}
    env.update({f"GRIDPAY_API__{k.upper()}": str(v) for k, v in api.items()})
    return env


def split_pem(tmp_path):
    both, ca = _self_signed_pem(tmp_path)
    text = both.read_text()
    cut = text.index("-----BEGIN PRIVATE KEY-----")
    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    cert.write_text(text[:cut])
    key.write_text(text[cut:])
    key.chmod(0o600)
    return cert, key, ca


def test_the_api_process_serves_https_and_stops_cleanly_on_sigterm(tmp_path, sqlite_url):
    migrate.upgrade(sqlite_url)
    cert, key, ca = split_pem(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "gridpay", "api"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=environment(sqlite_url, tls_cert_file=cert, tls_key_file=key))
    try:
        first = proc.stdout.readline()
        while first and not LISTENING.search(first):
            first = proc.stdout.readline()
        found = LISTENING.search(first)
        assert found and found.group("scheme") == "https", first
        # the host name the certificate does not carry: check the chain, not the name
        context = ssl.create_default_context(cafile=str(ca))
        context.check_hostname = False
        with httpx.Client(base_url=f"https://127.0.0.1:{found.group('port')}", verify=context, timeout=30) as http:
            for _ in range(600):       # uvicorn starts serving just after the line is printed
                try:
                    ready = http.get("/readyz")
                    break
                except httpx.ConnectError:
                    continue
            assert ready.status_code == 200 and ready.json()["database"] == "ok"
            assert http.get("/v1/me").json()["type"].endswith("/not-authenticated")
            # over TLS the console's cookies are Secure (tests/test_console_*.py run on plain HTTP)
            cookie = http.get("/console/sign-in").headers["set-cookie"].lower()
            assert cookie.startswith("gp_console_pre=") and all(
                flag in cookie for flag in ("; secure", "; httponly", "; samesite=strict"))
        proc.send_signal(signal.SIGTERM)
        # uvicorn finishes the requests in hand, then ends by the signal it was sent (systemd counts an
        # exit by SIGTERM as clean)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Finished server process" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_a_private_key_others_may_read_stops_the_start(tmp_path, sqlite_url):
    migrate.upgrade(sqlite_url)
    cert, key, _ca = split_pem(tmp_path)
    key.chmod(0o644)
    result = subprocess.run([sys.executable, "-m", "gridpay", "api"], capture_output=True, text=True, timeout=120,
                            env=environment(sqlite_url, tls_cert_file=cert, tls_key_file=key))
    assert result.returncode == 2 and "api.tls_key_file" in result.stderr and "too open" in result.stderr


def test_the_listening_socket_has_nagle_off_for_its_connections():
    """uvicorn, handed a socket, leaves Nagle on for the connections it accepts; an answer (headers,
    then body) then waited for the client's delayed ACK. The socket is made with TCP_NODELAY, which
    accepted connections inherit: one accepted here has it."""
    import socket

    from gridpay.api_command import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    try:
        sock.listen(1)
        client = socket.create_connection(sock.getsockname())
        accepted, _ = sock.accept()
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        accepted.close()
        client.close()
    finally:
        sock.close()

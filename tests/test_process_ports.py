"""Every long-running process serves /metrics on the port its section of the configuration names
(engines: ``engines.metrics_port_base`` + ``--instance``), as the systemd units start them."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from config.settings import environment_for
from ledger import migrate
from test_engine_support import ZMK_ENV, ZMK_HEX, settings_tree


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def scrape(port: int, seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def site(tmp_path, sqlite_url):
    migrate.upgrade(sqlite_url)
    tree = settings_tree(sqlite_url, drop_dir=str(tmp_path / "drop"))
    engine_port, scheduler_port, watch_port = free_ports(3)
    tree["engines"] = {"metrics_port_base": engine_port - 2}
    tree["scheduler"] = {"metrics_port": scheduler_port, "interval_s": 0.2}
    tree["watch"] = {"metrics_port": watch_port, "interval_s": 0.2}
    env = {**os.environ, **environment_for(tree), ZMK_ENV: ZMK_HEX}
    return env, {"engine": engine_port, "scheduler": scheduler_port, "watch": watch_port}, tmp_path


@pytest.mark.parametrize("process", ["engine", "scheduler", "watch"])
def test_the_process_serves_metrics_on_its_configured_port(site, process):
    env, ports, tmp = site
    argv = {"engine": ["engine", "--id", "ports-2", "--instance", "2", "--log-file", str(tmp / "engine.log")],
            "scheduler": ["scheduler"], "watch": ["watch", "--actor", "system:recon-watch-ports"]}[process]
    p = subprocess.Popen([sys.executable, "-m", "gridpay", *argv], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp)
    try:
        text = scrape(ports[process])
        assert "gridpay_db_up" in text
        if process == "scheduler":
            deadline = time.monotonic() + 20
            while "gridpay_scheduler_last_pass_timestamp_seconds 0.0" in text and time.monotonic() < deadline:
                time.sleep(0.3)
                text = scrape(ports[process])
            assert "gridpay_scheduler_last_pass_timestamp_seconds 0.0" not in text, "no pass recorded"
        if process == "watch":
            assert (tmp / "drop" / "incoming").is_dir(), "the configured drop_dir is watched"
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-2000:]
    assert str(ports[process]) in out + err

"""scripts/bench/haproxy_local.py: the benches run config/haproxy's production files made local, not a
hand-written twin. The local configurations keep the production balancing and health checks, bind on
127.0.0.1 only, need nothing of the production hosts, and HAProxy accepts them (``haproxy -c``)."""
from __future__ import annotations

import subprocess

import pytest

from scripts.bench import haproxy_local
from scripts.bench.haproxy_local import API_CFG, COUNTER_CFG, Server, local_config


def counter_config() -> str:
    servers = {f"gateways_{d}": [Server("gw1", f"127.0.0.1:{port}", 9108), Server("gw2", f"127.0.0.1:{port + 1}", 9109)]
               for d, port in (("ascii", 15001), ("bcd", 15011))}
    return local_config(COUNTER_CFG.read_text(), {"counter_ascii": 25001, "counter_bcd": 25002}, servers)


def api_config() -> str:
    return local_config(API_CFG.read_text(), {"gridpay_api": 28443},
                        {"gridpay_api": [Server("api1", "127.0.0.1:8181"), Server("api2", "127.0.0.1:8182")]})


def test_counter_config_keeps_the_production_balancing_and_checks():
    text = counter_config()
    assert "bind 127.0.0.1:25001" in text and "bind 127.0.0.1:25002" in text
    assert "server gw2 127.0.0.1:15012 check port 9109" in text
    assert text.count("balance leastconn") == 2 and text.count("http-check send meth GET uri /readyz") == 2
    assert "timeout client 30m" in text and "mode tcp" in text
    # what needs the production hosts is gone: the mixed frontend (not asked for), stats, lists, daemon
    assert "counter_cmb" not in text and "gateways_cmb" not in text and "stats" not in text
    assert "/etc/" not in text and "daemon" not in text and "10.10." not in text


def test_api_config_drops_tls_only():
    text = api_config()
    assert "ssl" not in text and "ca-file" not in text and "crt " not in text
    assert "option forwardfor" in text and "http-check send meth GET uri /readyz" in text
    assert "server api2 127.0.0.1:8182 check" in text


def test_a_backend_without_servers_is_refused():
    with pytest.raises(ValueError, match="gateways_bcd"):
        local_config(COUNTER_CFG.read_text(), {"counter_bcd": 25002}, {})


@pytest.mark.skipif(not haproxy_local.installed(), reason="haproxy is not installed")
@pytest.mark.parametrize("make", [counter_config, api_config])
def test_haproxy_accepts_the_local_configurations(make, tmp_path):
    path = tmp_path / "haproxy.cfg"
    path.write_text(make())
    check = subprocess.run([haproxy_local.executable(), "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

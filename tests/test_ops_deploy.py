"""The deployment kit in config/: the site example, the systemd units, the HAProxy example."""
from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config import load_settings

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "config" / "site.example.toml"
SYSTEMD = ROOT / "config" / "systemd"
HAPROXY = ROOT / "config" / "haproxy" / "gridpay.cfg"
ZMK = "0123456789ABCDEFFEDCBA9876543210"


def site_environ(settings_text: str | None = None) -> dict[str, str]:
    """The secrets the site example names, as the units' EnvironmentFile would give them."""
    text = settings_text or SITE.read_text(encoding="utf-8")
    env = {name: ZMK for name in re.findall(r'zmk_env\s*=\s*"([A-Z0-9_]+)"', text)}
    env.update({name: "s3cret-value" for name in re.findall(r'(?:password_env|secret_env)\s*=\s*"([A-Z0-9_]+)"', text)})
    return env


@pytest.fixture
def site(monkeypatch):
    env = site_environ()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(SITE, environ={})


# --- config/site.example.toml ----------------------------------------------------------------

def test_site_example_loads_with_its_secrets_from_the_environment(site):
    from sqlalchemy.engine import make_url

    assert site.database.url.startswith("postgresql+psycopg://")
    assert site.database.password_env
    assert make_url(site.database_url()).password == "s3cret-value"
    for code in site.banks:
        assert site.zmk(code) == bytes.fromhex(ZMK)
    assert site.notifier.sender == "http" and site.notifier.secret_env


def test_site_example_holds_no_secret_and_fails_without_them():
    from config import ConfigError

    settings = load_settings(SITE, environ={})  # loading needs no secret; using one does
    with pytest.raises(ConfigError, match="GRIDPAY_ZMK_"):
        settings.zmk(next(iter(settings.banks)))
    text = SITE.read_text(encoding="utf-8")
    assert not re.search(r"\b[0-9A-Fa-f]{32}\b", text), "a key in the example?"


def test_site_example_has_banks_of_both_dialects_and_tls_everywhere(site):
    from iso8583_specs.dialects import dialect_for_bank

    dialects = {code: dialect_for_bank(bank) for code, bank in site.banks.items()}
    presets = [bank.dialect for bank in site.banks.values() if not (bank.framing or bank.fields or bank.mac)]
    assert presets.count("ascii") >= 2 and presets.count("bcd") >= 2
    assert any(bank.framing or bank.fields or bank.mac for bank in site.banks.values()), "no mixed dialect"
    assert {bank.debit.mode for code, bank in site.banks.items() if "debit" in bank.channels} == {"online", "file"}
    ports = [listener.port for listener in site.gateway.listeners]
    assert len(ports) == len(set(ports))
    for listener in site.gateway.listeners:
        assert listener.tls_cert_file and listener.tls_key_file and listener.tls_client_ca_file, listener.name
        for code in listener.banks:
            bank = site.bank(code)
            assert "counter" in bank.channels, f"{listener.name}: {code} has no counter channel"
            assert bank.client_cert_subject, code
            if len(listener.banks) > 1:  # the listener's dialect reads the first frame: one dialect per listener
                assert dialects[code].name == listener.dialect, f"{listener.name}: {code} is {dialects[code].name}"
    counter_banks = {c for c, b in site.banks.items() if "counter" in b.channels}
    assert counter_banks == {c for listener in site.gateway.listeners for c in listener.banks}


# --- config/systemd ----------------------------------------------------------------------------

PROCESSES = {"serve", "engine", "scheduler", "notifier", "watch", "api", "collection-rate"}


def units() -> dict[str, configparser.ConfigParser]:
    out = {}
    for path in sorted(SYSTEMD.glob("*.service")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # systemd keys are case-sensitive
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
        out[path.name] = parser
    return out


def exec_argv(unit: configparser.ConfigParser) -> list[str]:
    return shlex.split(unit["Service"]["ExecStart"])


def test_there_is_a_unit_per_process():
    found = {exec_argv(u)[1] for u in units().values()}
    assert found == PROCESSES
    assert "gridpay-engine@.service" in units(), "the engine unit is a template (several engines)"
    assert "gridpay-api@.service" in units(), "the API unit is a template (one worker per process)"
    target = SYSTEMD / "gridpay.target"
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(target.read_text(encoding="utf-8"))
    assert parser["Install"]["WantedBy"]
    for name, unit in units().items():
        assert unit["Install"]["WantedBy"] == "gridpay.target", name


def test_the_batch_side_yields_the_cpu_to_the_counter():
    """The engines run below the gateways' CPU priority; the processes that answer people and banks
    (gateway, API) and the scheduler (a batch's build is its critical path) run at the default."""
    by_process = {exec_argv(u)[1]: u["Service"] for u in units().values()}
    assert int(by_process["engine"]["Nice"]) > 0 and int(by_process["engine"]["CPUWeight"]) < 100
    for answering in ("serve", "api", "scheduler"):
        assert "Nice" not in by_process[answering] and "CPUWeight" not in by_process[answering], answering


REQUIRED = {
    "Unit": {"Description"},
    "Service": {"ExecStart", "User", "Group", "EnvironmentFile", "Restart", "KillSignal", "TimeoutStopSec",
                "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "CapabilityBoundingSet",
                "RestrictAddressFamilies", "SystemCallFilter", "ReadWritePaths"},
    "Install": {"WantedBy"},
}


@pytest.mark.parametrize("name", sorted(p.name for p in SYSTEMD.glob("*.service")))
def test_unit_has_the_required_keys(name):
    unit = units()[name]
    for section, keys in REQUIRED.items():
        missing = keys - set(unit[section])
        assert not missing, f"{name} [{section}] lacks {sorted(missing)}"
    service = unit["Service"]
    assert service["User"] == "gridpay" and service["Group"] == "gridpay"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == "", "no capabilities: every port is above 1024"
    text = (SYSTEMD / name).read_text(encoding="utf-8")
    env_files = re.findall(r"^EnvironmentFile=-?(\S+)", text, re.M)
    assert "/etc/gridpay/secrets.env" in env_files
    assert all(f.startswith("/etc/gridpay/") for f in env_files), "secrets live outside the repository"
    argv = exec_argv(unit)
    assert argv[0].endswith("/bin/gridpay")
    assert argv[argv.index("--config") + 1] == "/etc/gridpay/gridpay.toml"


def test_stop_timeouts_cover_the_drain(site):
    u = units()
    assert float(u["gridpay-serve.service"]["Service"]["TimeoutStopSec"]) >= 2 * site.gateway.drain_timeout_s
    notifier = site.notifier
    rounds = -(-notifier.batch_size // notifier.concurrency)
    assert float(u["gridpay-notifier.service"]["Service"]["TimeoutStopSec"]) >= rounds * notifier.http_timeout_s
    for name, unit in u.items():
        assert float(unit["Service"]["TimeoutStopSec"]) >= 60, name


def test_engine_template_names_each_instance(site):
    argv = exec_argv(units()["gridpay-engine@.service"])
    assert argv[argv.index("--id") + 1] == "%H-%i"


def test_engine_template_passes_its_instance_number_for_the_metrics_port(site):
    argv = exec_argv(units()["gridpay-engine@.service"])
    assert argv[argv.index("--instance") + 1] == "%i"
    assert "--metrics-port" not in argv, "the port comes from engines.metrics_port_base + instance"


def test_watch_unit_watches_the_configured_drop_directory(site):
    argv = exec_argv(units()["gridpay-watch.service"])
    assert "--dir" not in argv, "the drop directory comes from the configuration (drop_dir)"
    assert site.drop_dir == "/var/lib/gridpay/drop"
    assert not site.gateway.watch_drop_dir, "one watcher per drop directory"


def test_every_process_takes_its_metrics_port_from_the_configuration_and_prometheus_scrapes_it(site):
    """Each unit's process serves /metrics on the port its section of the site configuration
    names (no --metrics-port in any unit), and the Prometheus example scrapes each of them there."""
    import yaml

    ports = {"serve": [site.gateway.metrics_port], "notifier": [site.notifier.metrics_port],
             "scheduler": [site.scheduler.metrics_port], "watch": [site.watch.metrics_port],
             "engine": [site.engines.metrics_port_base + n for n in (1, 2)],
             "api": [site.api.port + 1], "collection-rate": [site.collection_rate.metrics_port]}
    jobs = {"serve": "gridpay-gateway", "notifier": "gridpay-notifier", "scheduler": "gridpay-scheduler",
            "watch": "gridpay-watch", "engine": "gridpay-engine", "api": "gridpay-api",
            "collection-rate": "gridpay-collection-rate"}
    assert set(ports) == PROCESSES
    for name, unit in units().items():
        assert "--metrics-port" not in exec_argv(unit), f"{name}: the port belongs in the configuration"
    every = [p for group in ports.values() for p in group]
    assert len(set(every)) == len(every), f"two processes share a metrics port: {ports}"
    scrape = yaml.safe_load((ROOT / "config" / "prometheus" / "prometheus.example.yml").read_text())["scrape_configs"]
    targets = {job["job_name"]: {int(t.rsplit(":", 1)[1]) for c in job["static_configs"] for t in c["targets"]}
               for job in scrape}
    for process, job in jobs.items():
        assert job in targets, f"Prometheus does not scrape {process} ({job})"
        assert targets[job] == set(ports[process]), f"{job} scraped on {targets[job]}, serves on {ports[process]}"


_OPTIONS_SCRIPT = """
import json, sys
from gridpay.cli import SUBCOMMANDS, gridpay
import click
ctx = click.Context(gridpay)
name = sys.argv[1]
cmd = gridpay.get_command(ctx, name)
print(json.dumps(sorted(o for p in cmd.params for o in p.opts + p.secondary_opts)))
"""


@pytest.mark.parametrize("name", sorted(p.name for p in SYSTEMD.glob("*.service")))
def test_unit_execstart_is_a_gridpay_command_with_known_options(name):
    """Resolved in a fresh process, as systemd would start it (so an import-order problem shows)."""
    from gridpay.cli import SUBCOMMANDS

    argv = exec_argv(units()[name])
    sub = argv[1]
    assert sub in SUBCOMMANDS, f"{name}: gridpay has no subcommand {sub!r}"
    result = subprocess.run([sys.executable, "-c", _OPTIONS_SCRIPT, sub], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, f"{name}: `gridpay {sub}` cannot be loaded:\n{result.stderr[-2000:]}"
    options = set(json.loads(result.stdout))
    given = {a.split("=", 1)[0] for a in argv[2:] if a.startswith("-")}
    assert given <= options, f"{name}: gridpay {sub} has no option {sorted(given - options)}"
    result = subprocess.run([sys.executable, "-m", "gridpay", sub, "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, f"`gridpay {sub} --help` fails:\n{result.stderr[-2000:]}"


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_knows_every_directive(tmp_path):
    """`systemd-analyze verify` (offline): unknown keys and sections are reported, not ignored."""
    names = []
    for path in sorted(SYSTEMD.iterdir()):
        text = path.read_text(encoding="utf-8").replace("/opt/gridpay/venv/bin/gridpay", sys.executable)
        target = tmp_path / path.name.replace("@.service", "@1.service")
        target.write_text(text)
        names.append(str(target))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", *names], capture_output=True, text=True,
                            timeout=120, env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"})
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if str(tmp_path) in line and re.search(r"[Uu]nknown|[Ff]ailed to parse|[Ii]nvalid|ignoring", line)]
    assert not complaints, "\n".join(complaints)


# --- config/haproxy ----------------------------------------------------------------------------

def haproxy_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for raw in HAPROXY.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw[0].isspace():
            current = line.strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line.strip())
    return sections


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 0.001}[m.group(2)]


def test_haproxy_balances_every_counter_listener_over_the_gateways(site):
    sections = haproxy_sections()
    defaults = sections["defaults"]
    assert "mode tcp" in defaults
    timeouts = dict(line.split()[1:3] for line in defaults if line.startswith("timeout "))
    longest_idle = max(bank.idle_timeout_s for bank in site.banks.values())
    for side in ("client", "server"):
        assert _seconds(timeouts[side]) >= max(600, 2 * longest_idle, 2 * site.gateway.echo_interval_s), side
    frontends = {name.split()[1]: lines for name, lines in sections.items() if name.startswith("frontend ")}
    backends = {name.split()[1]: lines for name, lines in sections.items() if name.startswith("backend ")}
    bound = {}
    for name, lines in frontends.items():
        for line in lines:
            if line.startswith("bind ") and name != "stats":
                bound[int(line.split()[1].rsplit(":", 1)[1])] = next(
                    ln.split()[1] for ln in lines if ln.startswith("default_backend "))
    assert set(bound) == {listener.port for listener in site.gateway.listeners}
    metrics_port = site.gateway.metrics_port
    for port, backend in bound.items():
        lines = backends[backend]
        assert "balance leastconn" in lines, backend
        assert "option httpchk" in lines, backend
        assert any(ln.startswith("http-check send") and "uri /readyz" in ln for ln in lines), backend
        assert "http-check expect status 200" in lines, backend
        servers = [ln.split() for ln in lines if ln.startswith("server ")]
        assert len(servers) >= 2, f"{backend}: at least two gateways"
        for server in servers:
            assert server[2].rsplit(":", 1)[1] == str(port), f"{backend}: {server[1]} on the wrong port"
            assert "check" in server and server[server.index("port") + 1] == str(metrics_port), \
                f"{backend}: {server[1]} must be checked on the metrics port {metrics_port}"
    gateways = {tuple(s.split()[1:3]) for lines in backends.values() for s in lines if s.startswith("server ")}
    hosts = {(name, addr.rsplit(":", 1)[0]) for name, addr in gateways}
    assert len({h for _, h in hosts}) >= 2 and len(hosts) == len({n for n, _ in hosts}), "one address per gateway"


HAPROXY_BIN = shutil.which("haproxy")


@pytest.mark.skipif(HAPROXY_BIN is None, reason="haproxy not installed (Debian package haproxy)")
def test_haproxy_accepts_the_configuration(tmp_path):
    (tmp_path / "banks.lst").write_text("10.20.0.0/16\n")
    text = HAPROXY.read_text(encoding="utf-8").replace("/etc/haproxy/gridpay-banks.lst", str(tmp_path / "banks.lst"))
    text = text.replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    result = subprocess.run([HAPROXY_BIN, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- config/haproxy/gridpay-api.cfg: the operations API -----------------------------------------

HAPROXY_API = ROOT / "config" / "haproxy" / "gridpay-api.cfg"


def test_haproxy_api_example_checks_readyz_on_two_api_processes_in_http_mode(site):
    text = HAPROXY_API.read_text(encoding="utf-8")
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    assert "mode http" in lines and "option forwardfor" in lines
    assert any(ln.startswith("http-check send") and "uri /readyz" in ln for ln in lines)
    assert "http-check expect status 200" in lines
    servers = [ln.split() for ln in lines if ln.startswith("server ")]
    assert len(servers) == 2 and len({s[2].rsplit(":", 1)[0] for s in servers}) == 2, "two hosts"
    for server in servers:
        assert server[2].rsplit(":", 1)[1] == str(site.api.port + 1), "gridpay-api@1 listens on api.port + 1"
    assert site.api.tls_cert_file and any("ssl verify required" in ln for ln in lines), "HTTPS to the processes"
    assert site.api.trusted_proxies != ["127.0.0.1"], "the HAProxy hosts are trusted for X-Forwarded-For"


def _self_signed_pem(tmp_path) -> tuple[Path, Path]:
    from datetime import datetime, timedelta, timezone

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gridpay-api")])
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(start + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (tmp_path / "api.pem").write_bytes(cert_pem + key_pem)
    (tmp_path / "ca.pem").write_bytes(cert_pem)
    return tmp_path / "api.pem", tmp_path / "ca.pem"


@pytest.mark.skipif(HAPROXY_BIN is None, reason="haproxy not installed (Debian package haproxy)")
def test_haproxy_accepts_the_api_configuration(tmp_path):
    crt, ca = _self_signed_pem(tmp_path)
    text = HAPROXY_API.read_text(encoding="utf-8").replace("/etc/haproxy/certs/gridpay-api.pem", str(crt))
    text = text.replace("/etc/haproxy/certs/gridpay-ca.pem", str(ca))
    path = tmp_path / "gridpay-api.cfg"
    path.write_text(text)
    result = subprocess.run([HAPROXY_BIN, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

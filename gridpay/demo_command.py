"""``gridpay demo``: a working gateway on embedded SQLite with demo data, shown by the simulator.

Everything lives under one directory (default ``var/demo``): the configuration, random demo
ZMKs in key files (secrets never come from the repo), the SQLite database, the gateway's log.
The command starts ``gridpay serve`` as a child process, runs ``gridpay sim counter`` against
both of its listeners (ASCII and BCD dialects), prints the figures and where things are, and
keeps the gateway serving until Ctrl-C (or exits at once with ``--no-wait``).
"""
from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click

ASCII_BANK, BCD_BANK = "01020000", "01050000"

CONFIG = """\
# demo configuration written by `gridpay demo`
[database]
url = "sqlite:///{db}"

[gateway]
metrics_host = "127.0.0.1"
metrics_port = {metrics_port}
log_file = "{log}"

[[gateway.listeners]]
name = "counter-ascii"
port = {ascii_port}
dialect = "ascii"
banks = ["{ascii_bank}"]

[[gateway.listeners]]
name = "counter-bcd"
port = {bcd_port}
dialect = "bcd"
banks = ["{bcd_bank}"]

[banks.{ascii_bank}]
name = "Demo bank (ASCII dialect)"
dialect = "ascii"
zmk_file = "{keys}/{ascii_bank}.zmk"
channels = ["counter"]

[banks.{bcd_bank}]
name = "Demo bank (BCD dialect)"
dialect = "bcd"
zmk_file = "{keys}/{bcd_bank}.zmk"
channels = ["counter"]
"""


def gridpay(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridpay", *args]


def write_site(workdir: Path, ascii_port: int, bcd_port: int, metrics_port: int) -> Path:
    from config.key_files import write_key_file

    keys = workdir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    for bank in (ASCII_BANK, BCD_BANK):
        key_file = keys / f"{bank}.zmk"
        if key_file.exists():
            key_file.chmod(0o600)  # a key the gateway refuses otherwise (config/key_files.py)
        else:
            write_key_file(key_file, secrets.token_hex(16).upper())
    config = workdir / "gridpay.toml"
    config.write_text(CONFIG.format(db=(workdir / "gridpay.db").resolve(), log=(workdir / "gateway.log").resolve(),
                                    keys=keys.resolve(), ascii_port=ascii_port, bcd_port=bcd_port,
                                    metrics_port=metrics_port, ascii_bank=ASCII_BANK, bcd_bank=BCD_BANK))
    return config


def load_demo_data(workdir: Path, config: Path, customers: int) -> str:
    from config import load_settings
    from ledger import migrate
    from ledger.db import make_engine
    from ledger.demo_data import write_demo_files
    from ledger.imports import import_file

    url = load_settings(config).database_url()
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            from ledger.bank_rows import ensure_banks
            ensure_banks(conn, {ASCII_BANK: "Demo bank (ASCII dialect)", BCD_BANK: "Demo bank (BCD dialect)"})
        files = write_demo_files(workdir / "billing", customers=customers, seed=1)
        for kind in ("customers", "bills", "agreements"):
            result = import_file(engine, kind, files[kind], actor="system:demo")   # a process, not a person
            if result.errors:
                raise click.ClickException(f"demo {kind} file rejected: {result.errors[0]}")
    finally:
        engine.dispose()
    return url


def wait_ready(metrics_port: int, gateway: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gateway.poll() is not None:
            raise click.ClickException("the gateway exited during start-up; see its log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2) as response:
                if json.load(response)["status"] == "ready":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise click.ClickException("the gateway did not become ready in time")


@click.command()
@click.option("--dir", "workdir", default="var/demo", show_default=True, type=click.Path(file_okay=False),
              help="where the demo keeps its configuration, keys, database and log")
@click.option("--customers", default=2000, show_default=True, help="demo customers to create")
@click.option("--ascii-port", default=15001, show_default=True)
@click.option("--bcd-port", default=15002, show_default=True)
@click.option("--metrics-port", default=9108, show_default=True)
@click.option("--wait/--no-wait", default=True, help="keep the gateway serving after the simulator's run")
def demo(workdir, customers, ascii_port, bcd_port, metrics_port, wait) -> None:
    """Install demo data on embedded SQLite, start the gateway and show it working with simulated banks."""
    workdir = Path(workdir)
    fresh = not (workdir / "gridpay.db").exists()
    config = write_site(workdir, ascii_port, bcd_port, metrics_port)
    if fresh:
        click.echo(f"creating the demo database with {customers} customers in {workdir}/gridpay.db ...")
        load_demo_data(workdir, config, customers)
    gateway = subprocess.Popen(gridpay("serve", "--config", str(config)), stdout=subprocess.PIPE, text=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: the gateway must not outlive the demo
        signal.signal(sig, _interrupt)
    try:
        wait_ready(metrics_port, gateway)
        click.echo(gateway.stdout.readline().strip())
        owing = customers_with_bills(load_url(config))
        half = len(owing) // 2
        for (name, port, bank, dialect), share in zip((("ASCII", ascii_port, ASCII_BANK, "ascii"),
                                                       ("BCD", bcd_port, BCD_BANK, "bcd")), (owing[:half], owing[half:])):
            click.echo(f"\n--- simulated counter of bank {bank} ({name} dialect) on port {port} ---")
            customer_file = workdir / f"customers-{dialect}.txt"
            customer_file.write_text("\n".join(share))
            run = subprocess.run(gridpay(
                "sim", "counter", "--port", str(port), "--dialect", dialect, "--bank", bank,
                "--zmk-file", str(workdir / "keys" / f"{bank}.zmk"), "--customers", str(customer_file),
                "--count", str(min(len(share), 1000)), "--connections", "4",
                "--mix", "pay=90,reverse=4,repeat=3,malformed=3", "--seed", str(int(time.time()))),
                capture_output=True, text=True)
            click.echo((run.stdout + run.stderr).strip())
        verify = subprocess.run(gridpay("ledger", "verify", "--config", str(config)), capture_output=True, text=True)
        click.echo(f"\nledger verify: {(verify.stdout + verify.stderr).strip()}")
        click.echo(f"""
The gateway is serving:
  counter channel   ASCII 127.0.0.1:{ascii_port} (bank {ASCII_BANK}), BCD 127.0.0.1:{bcd_port} (bank {BCD_BANK})
  metrics           http://127.0.0.1:{metrics_port}/metrics   health: /healthz  /readyz
  gateway log       {workdir}/gateway.log (one line per transaction)
  database          {workdir}/gridpay.db   configuration {config}
  reports           gridpay report daily --config {config} --date <YYYY-MM-DD>
Run the simulator again:  gridpay sim counter --port {ascii_port} --bank {ASCII_BANK} --zmk-file {workdir}/keys/{ASCII_BANK}.zmk --db {load_url(config)}
""")
        if wait:
            click.echo("Ctrl-C (or SIGTERM, SIGHUP) stops the gateway.", nl=True)
            sys.stdout.flush()
            gateway.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if gateway.poll() is None:
            gateway.terminate()
            gateway.wait(timeout=30)


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def customers_with_bills(url: str) -> list[str]:
    from gridpay.sim_commands import customers_from_db

    return customers_from_db(url, 1_000_000)


def load_url(config: Path) -> str:
    from config import load_settings

    return load_settings(config).database_url()

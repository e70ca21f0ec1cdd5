"""The wheel holds everything the processes need at run time, and works outside the checkout.

Built from a copy of the source tree as a user builds it (`pip wheel .`, isolated build), installed
with its dependencies into a clean virtual environment in a temporary folder, and run from an empty
directory with nothing of the checkout on the path: `gridpay db upgrade` on a fresh SQLite file,
`gridpay demo --no-wait`, `gridpay ops-kit`."""
from __future__ import annotations

import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from packaging_harness import (RUNTIME_PACKAGES, ROOT, clean_env, copy_source, describe, empty_dir, free_port,
                               make_venv, run)

pytestmark = pytest.mark.slow

KIT = ("gridpay.example.toml", "site.example.toml", "systemd/gridpay-serve.service",
       "systemd/gridpay-engine@.service", "systemd/gridpay-api@.service", "systemd/gridpay.target", "prometheus/prometheus.example.yml",
       "prometheus/gridpay-alerts.yml", "grafana/gridpay-dashboard.json", "haproxy/gridpay.cfg",
       "haproxy/gridpay-api.cfg")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    source = copy_source(base / "src")
    out = base / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, "."], cwd=source, env=clean_env(),
        timeout=600)
    (built,) = out.glob("gridpay-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """The wheel with its dependencies in a clean venv; ``cwd``: an empty directory to run from."""
    base = tmp_path_factory.mktemp("installed")
    venv = make_venv(base / "venv")
    env = clean_env(venv)
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel], cwd=base, env=env, timeout=900)
    return {"venv": venv, "bin": venv / "bin", "env": env, "base": base, "cwd": empty_dir(base / "empty")}


def source_files(package: str) -> set[str]:
    """Every file of a runtime package in the source tree, as a wheel names it."""
    return {path.relative_to(ROOT).as_posix() for path in (ROOT / package).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")
            and path.suffix not in (".pyc", ".pyo", ".orig", ".rej", ".swp") and not path.name.endswith("~")}


def test_the_wheel_holds_the_runtime_packages_with_their_data_and_nothing_else(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(whl.read(info).decode())
        entry_points = whl.read(info.replace("METADATA", "entry_points.txt")).decode()
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert tops == set(RUNTIME_PACKAGES), f"top-level entries besides the runtime packages: {tops}"
    assert not any(name.startswith(("scripts/", "tests/")) for name in names)
    for needed in ("ledger/migrations/env.py", "ledger/migrations/script.py.mako",
                   *(f"config/{name}" for name in KIT)):
        assert needed in names, f"{needed} is not in the wheel"
    missing = sorted(set().union(*(source_files(p) for p in RUNTIME_PACKAGES)) - names)
    assert not missing, f"files of the runtime packages missing from the wheel: {missing}"
    assert "gridpay = gridpay.cli:main" in entry_points
    requires = metadata.get_all("Requires-Dist")
    for extra_only in ("oracledb", "psutil", "pytest"):
        for req in requires:
            if req.lower().startswith(extra_only):
                assert "extra ==" in req, f"{req}: a runtime dependency, should be an extra"


def test_the_installed_packages_come_from_the_venv_not_the_checkout(installed):
    out = run([installed["bin"] / "python", "-c",
               "import sys, config, engines, gateway, iso8583_specs, ledger\n"
               "for m in (config, engines, gateway, iso8583_specs, ledger): print(m.__file__)\n"
               "from importlib.metadata import files\n"
               "print(sorted({f.parts[0] for f in files('gridpay')\n"
               "              if f.parts[0] != '..' and not f.parts[0].endswith('.dist-info')}))"],
              cwd=installed["cwd"], env=installed["env"]).stdout.splitlines()
    for line in out[:5]:
        assert Path(line).is_relative_to(installed["venv"]), line
    assert out[5] == repr(sorted(RUNTIME_PACKAGES)), "gridpay installed more than its runtime packages"


def test_db_upgrade_on_a_fresh_sqlite_file_from_an_empty_directory(installed):
    db = installed["base"] / "fresh.db"
    out = run([installed["bin"] / "gridpay", "db", "upgrade", "--url", f"sqlite:///{db}"], cwd=installed["cwd"],
              env=installed["env"], timeout=300)
    assert "database at revision" in out.stdout, describe(out)
    assert db.stat().st_size > 0
    assert not any(installed["cwd"].iterdir()), "gridpay db upgrade wrote into the current directory"


def test_demo_runs_from_an_empty_directory(installed):
    ports = [str(free_port()) for _ in range(3)]
    demo_dir = installed["base"] / "demo"
    out = run([installed["bin"] / "gridpay", "demo", "--no-wait", "--dir", demo_dir, "--customers", "120",
               "--ascii-port", ports[0], "--bcd-port", ports[1], "--metrics-port", ports[2]],
              cwd=installed["cwd"], env=installed["env"], timeout=300)
    text = out.stdout
    assert text.count("payments approved") == 2, describe(out)  # both dialects' simulated counters
    assert text.count("answers matched what was sent") == 2, describe(out)
    assert "ledger verifies: OK" in text, describe(out)
    assert (demo_dir / "gridpay.db").exists() and (demo_dir / "gateway.log").exists()
    assert not any(installed["cwd"].iterdir()), "gridpay demo wrote into the current directory"


def test_ops_kit_writes_the_packaged_kit_and_keeps_existing_files(installed):
    kit = installed["base"] / "kit"
    gridpay = installed["bin"] / "gridpay"
    out = run([gridpay, "ops-kit", kit], cwd=installed["cwd"], env=installed["env"])
    for name in KIT:
        assert (kit / name).read_bytes() == (ROOT / "config" / name).read_bytes(), name
        assert str(kit / name) in out.stdout, f"ops-kit did not say it wrote {name}"
    written = sorted(p.relative_to(kit).as_posix() for p in kit.rglob("*") if p.is_file())
    packaged = sorted(name.removeprefix("config/") for name in source_files("config") if not name.endswith(".py"))
    assert written == packaged

    (kit / "site.example.toml").write_text("# edited on site\n")
    again = run([gridpay, "ops-kit", kit], cwd=installed["cwd"], env=installed["env"], check=False)
    assert again.returncode != 0 and "--force" in again.stderr, describe(again)
    assert (kit / "site.example.toml").read_text() == "# edited on site\n"
    run([gridpay, "ops-kit", "--force", kit], cwd=installed["cwd"], env=installed["env"])
    assert (kit / "site.example.toml").read_bytes() == (ROOT / "config" / "site.example.toml").read_bytes()

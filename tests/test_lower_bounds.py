"""The dependencies' lower bounds in setup.cfg are true: gridpay installs and runs at exactly them.

constraints/lower-bounds.txt pins every runtime dependency at its bound; a clean venv outside the
checkout installs the project with those constraints, imports every module of the installed
packages and runs `gridpay --help` and `gridpay db upgrade` on a fresh SQLite file. The Oracle
driver is the `oracle` extra: nothing imports it without an Oracle URL, an Oracle URL without it
says how to install it, and with the extra at its bound the driver loads (and finds no server: none
was available, so Oracle is only tested by compiling its DDL and statements)."""
from __future__ import annotations

import configparser
import re

import pytest

from packaging_harness import IMPORT_EVERY_MODULE, ROOT, clean_env, copy_source, empty_dir, make_venv, run

CONSTRAINTS = ROOT / "constraints" / "lower-bounds.txt"
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def options() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    return parser


def requirements(text: str) -> dict[str, str]:
    """name -> version specifiers, of a setup.cfg requirement list."""
    out = {}
    for line in text.strip().splitlines():
        name, _extras, spec = REQUIREMENT.match(line.strip()).groups()
        out[normalize(name)] = spec.replace(" ", "")
    return out


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            out[normalize(name)] = version.strip()
    return out


def test_every_runtime_dependency_is_pinned_at_its_lower_bound():
    runtime = requirements(options()["options"]["install_requires"])
    pinned = pins()
    for name, spec in runtime.items():
        bound = re.search(r">=([^,]+)", spec)
        assert bound, f"{name}: no lower bound ({spec!r})"
        assert pinned.get(name) == bound.group(1), \
            f"{name}>={bound.group(1)} but {CONSTRAINTS.name} pins {pinned.get(name)}"
    oracle = requirements(options()["options.extras_require"]["oracle"])["oracledb"]
    assert pinned.get("oracledb") == re.search(r">=([^,]+)", oracle).group(1), "the oracle extra's bound"
    extra_pins = set(pinned) - set(runtime) - {"psycopg-binary", "oracledb"}  # psycopg[binary]'s exact twin
    assert not extra_pins, f"pinned but not a runtime dependency: {extra_pins}"
    assert pinned.get("psycopg-binary") == pinned["psycopg"]


def test_the_oracle_driver_and_test_tools_are_extras_not_runtime_dependencies():
    cfg = options()
    runtime = requirements(cfg["options"]["install_requires"])
    extras = cfg["options.extras_require"]
    assert "oracledb" not in runtime and "oracledb" in requirements(extras["oracle"])
    assert "psutil" not in runtime and "psutil" in requirements(extras["test"])


@pytest.mark.slow
def test_gridpay_installs_and_runs_at_the_lower_bounds(tmp_path):
    source = copy_source(tmp_path / "src")
    venv = make_venv(tmp_path / "venv")
    env = clean_env(venv)
    python, gridpay = venv / "bin" / "python", venv / "bin" / "gridpay"
    run([python, "-m", "pip", "install", "-q", "--prefer-binary", "-c", CONSTRAINTS, source], cwd=tmp_path, env=env,
        timeout=900)
    freeze = run([python, "-m", "pip", "freeze"], cwd=tmp_path, env=env).stdout
    installed = {normalize(n): v for n, v in re.findall(r"^([^=\s]+)==(\S+)$", freeze, re.M)}
    for name, version in pins().items():
        if name != "oracledb":
            assert installed.get(name) == version, f"{name}: {installed.get(name)} installed, {version} pinned"
    assert "oracledb" not in installed and "psutil" not in installed

    cwd = empty_dir(tmp_path / "empty")
    run([python, "-c", IMPORT_EVERY_MODULE], cwd=cwd, env=env, timeout=300)
    assert "db" in run([gridpay, "--help"], cwd=cwd, env=env).stdout
    out = run([gridpay, "db", "upgrade", "--url", f"sqlite:///{tmp_path / 'fresh.db'}"], cwd=cwd, env=env)
    assert "database at revision" in out.stdout

    # Oracle: the DDL compiles offline without the driver; a connection asks for the extra.
    ddl = run([gridpay, "db", "sql", "--dialect", "oracle"], cwd=cwd, env=env).stdout
    assert "CREATE TABLE" in ddl
    upgrade_oracle = [gridpay, "db", "upgrade", "--url", "oracle+oracledb://gridpay@127.0.0.1:1/?service_name=GRID"]
    oracle = run(upgrade_oracle, cwd=cwd, env=env, check=False)
    assert oracle.returncode == 2 and "pip install 'gridpay[oracle]'" in oracle.stderr, oracle.stderr
    assert "Traceback" not in oracle.stderr and "untested" in oracle.stderr
    # With the extra at its bound the driver loads and tries to connect (no Oracle server here: port 1).
    run([python, "-m", "pip", "install", "-q", "--prefer-binary", "-c", CONSTRAINTS, f"{source}[oracle]"],
        cwd=tmp_path, env=env, timeout=600)
    assert f"oracledb=={pins()['oracledb']}" in run([python, "-m", "pip", "freeze"], cwd=tmp_path, env=env).stdout
    connecting = run(upgrade_oracle, cwd=cwd, env=env, check=False, timeout=120)
    assert connecting.returncode != 0 and "DPY-" in connecting.stderr, connecting.stderr[-3000:]
    assert "pip install" not in connecting.stderr

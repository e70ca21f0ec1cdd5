"""Helpers of the packaging tests (test_wheel.py, test_lower_bounds.py): a copy of the source tree
to build from, clean virtual environments outside the checkout, and commands run in them from an
empty directory with nothing of the checkout on their path."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The packages a wheel installs; scripts/ and tests/ stay in the source tree.
RUNTIME_PACKAGES = ("api", "config", "engines", "gateway", "gridpay", "iso8583_specs", "ledger", "runtime")

# What a build never needs from a working tree (and what would leak stale files into a build).
_JUNK = shutil.ignore_patterns(".git", ".venv", "venv*", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                               "var", ".hypothesis", ".pytest_cache", ".mypy_cache", ".ruff_cache")

# Walks every module of the installed runtime packages (skipping __main__, which runs the command);
# prints the failures, and fails if any module cannot be imported or the Oracle driver got imported.
IMPORT_EVERY_MODULE = f"""
import importlib, pkgutil, sys, traceback
failed, count = [], 0
for top in {RUNTIME_PACKAGES!r}:
    package = importlib.import_module(top)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        count += 1
        try:
            importlib.import_module(info.name)
        except Exception:
            failed.append(info.name)
            traceback.print_exc()
print(f"imported {{count - len(failed)}} of {{count}} modules")
if "oracledb" in sys.modules:
    failed.append("oracledb was imported without an Oracle URL")
sys.exit(f"failed: {{failed}}" if failed else 0)
"""


def copy_source(dest: Path) -> Path:
    """The working tree without virtual environments, build leftovers or caches: a build from it
    sees exactly the sources (an in-tree build/ of an earlier build would otherwise add its files)
    and writes nothing into the checkout."""
    shutil.copytree(ROOT, dest, ignore=_JUNK)
    return dest


def clean_env(venv: Path | None = None) -> dict[str, str]:
    """The environment without anything that points into the checkout or configures gridpay."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")
           and not k.startswith(("GRIDPAY_", "PYTEST_", "__PYVENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    return env


def run(argv: list[str | Path], *, cwd: Path, env: dict[str, str], timeout: float = 600,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a command; with ``check``, fail the test with its output (stderr included) unless it exits 0."""
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, describe(proc)
    return proc


def describe(proc: subprocess.CompletedProcess) -> str:
    return (f"`{' '.join(map(str, proc.args))}` exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")


def make_venv(path: Path) -> Path:
    """A clean virtual environment (no system site-packages) with pip, outside the checkout."""
    assert ROOT not in path.resolve().parents, f"{path} is inside the checkout"
    run([sys.executable, "-m", "venv", path], cwd=path.parent, env=clean_env())
    return path


def empty_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""The end-to-end business day (scripts/e2e_day.py, docs/e2e-day.md) on PostgreSQL: two gateways, two
engines, the scheduler, the notifier and the drop watcher as separate processes, bank hosts for A and B,
counter systems for A, B and C, bank C's batch files, the banks' docs/spec/INTERFACE.md §7.1 files with planted differences and
a finance statement. Once clean, once with a seeded random process killed (-9) and restarted."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def run_day(pg_server_url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.e2e_day", "--pg-url", pg_server_url, "--customers", "450",
                           "--work-dir", str(tmp_path / "day"), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def assert_day(result: subprocess.CompletedProcess) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "ALL CHECKS PASSED" in out, out[-8000:]


def test_business_day_clean(pg_server_url, tmp_path):
    assert_day(run_day(pg_server_url, tmp_path, "--seed", "2"))


def test_business_day_with_a_random_process_killed(pg_server_url, tmp_path):
    result = run_day(pg_server_url, tmp_path, "--seed", "5", "--kill", "random")
    assert "KILL -9" in result.stdout, result.stdout[-4000:]
    assert_day(result)


def test_business_day_with_an_engine_killed_mid_batch(pg_server_url, tmp_path):
    """The engine killed while its chunks are in flight and restarted under its own name: its old
    leases expire, the chunks are taken over, their sent debits reversed; the day ends the same way."""
    result = run_day(pg_server_url, tmp_path, "--seed", "12", "--kill", "e2")
    assert "KILL -9" in result.stdout, result.stdout[-4000:]
    assert_day(result)

"""The full-size bench (scripts/bench/fullscale.py, docs/fullscale.md) at 1/100 of the utility: 43,000
customers imported through ``gridpay ledger import``, 2,000 counter payments through two gateways behind
HAProxy, 5,000 debits by two engines against eleven bank hosts, the banks' files and the finance statement
through the watcher, the month-end reports and ``ledger verify`` - the same code path as the full run,
so it never rots. It asserts the run's correctness checks, never its speed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bench import haproxy_local

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PHASES = ("files", "import_customers", "import_bills", "import_agreements", "imports", "analyze", "counter_before",
          "debits", "counter_during", "counter_after", "bank_files", "report_month-end", "report_confirmed",
          "report_aging", "reports", "verify")


@pytest.mark.skipif(not haproxy_local.installed(), reason="haproxy is not installed")
def test_fullscale_bench_at_one_hundredth(pg_server_url, tmp_path):
    summary_path = tmp_path / "summary.json"
    result = subprocess.run([sys.executable, "-m", "scripts.bench.fullscale", "--pg-url", pg_server_url,
                             "--scale", "0.01", "--work-dir", str(tmp_path / "run"), "--summary", str(summary_path),
                             # the machine's scheduler is the other tests' too: not changed from a test
                             "--keep-autogroup"],
                            cwd=ROOT, capture_output=True, text=True, timeout=1500)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "ALL CHECKS PASSED" in out, out[-8000:]
    summary = json.loads(summary_path.read_text())
    assert summary["failures"] == []
    assert summary["niceness"]["autogroup"].startswith("left as it was")
    assert set(PHASES) <= set(summary["phases"]), sorted(summary["phases"])
    phases = summary["phases"]
    assert phases["import_customers"]["lines"] == 43_000 and phases["import_bills"]["lines"] == 43_000
    assert phases["debits"]["debits"] == 5_000 and phases["debits"]["skipped"] == 0
    assert set(phases["debits"]["states"]) <= {"approved", "declined", "reversed"}
    paid = sum(phases[f"counter_{w}"]["payments"] for w in ("before", "during", "after"))
    assert paid == 2_000
    for w in ("before", "during", "after"):   # where a payment's time goes: its group commits, by the metrics
        window = phases[f"counter_{w}"]
        if window["payments"]:
            assert window["postings_per_commit"] >= 1 and window["gateway_requests"] >= window["payments"], window
            assert "0200" in window["gateway_p50_p99_ms_by_mti"], window
    recon = summary["recon"]
    assert recon["planted"] == recon["planted_found"] and len(recon["planted"]) == 4
    assert sum(b["exceptions"] for b in recon["bank"].values()) == len(recon["planted"])
    assert phases["verify"]["ok"] is True
    assert summary["table_mib"]["bills"] > 0 and summary["peak_rss_mib"]["gw1"] > 0

"""scripts/bench/history.py at a tiny size on PostgreSQL, so that it never rots: both phases, in
two rounds, serve every paced payment without a mismatch, reconcile their day with nothing left
over, the year's rows land in their months' partitions and both ledgers verify. (Nothing asserts on
time.)"""
from __future__ import annotations

import json

import pytest

from scripts.bench import history

pytestmark = pytest.mark.slow


def test_the_history_bench_runs_on_postgresql(pg_server_url, monkeypatch, capsys):
    monkeypatch.setenv("GRIDPAY_BENCH_PG_URL", pg_server_url)
    assert history.main(["--customers", "300", "--months", "3", "--rate", "10", "--duration", "2",
                         "--day-payments", "40", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out.strip().splitlines()[-1])
    for phase in ("month", "year"):
        assert len(res[phase]) == 2
        for measured in res[phase]:
            counter, recon = measured["counter"], measured["recon"]
            assert counter["payments"] == 20 and counter["mismatches"] == 0, counter
            assert recon["lines"] == recon["matched"] == 40 and not any(recon["counts"].values()), recon
    assert res["setup"]["verify_failures"] == []
    entries = {p["name"]: p["rows"] for p in res["partitions"] if p["table"] == "journal_entries"}
    assert sum(1 for name, rows in entries.items() if rows and name != "journal_entries_default") == 3
    assert entries["journal_entries_default"] == 0
    assert res["rows_year"]["payments"] > res["rows_month"]["payments"]
    for line in ("counter payment 0200 latency p99 ms", "reconciled 40 / 40 lines a round", "(before)", "(after)"):
        assert line in out

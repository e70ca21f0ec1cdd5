"""scripts/bench/api.py at a tiny size, so that it never rots: every look-up answered, every single
debit approved end to end through the API, an engine and the bank simulator, the gateway's counter
run without a mismatch, look-ups through HAProxy over two API processes (when haproxy is
installed), and the three figures printed side by side. (Nothing asserts on time.)"""
from __future__ import annotations

import json
import shutil

import pytest

from scripts.bench import api as api_bench

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("db", ["postgresql", "sqlite"])
def test_the_api_bench_runs_at_a_tiny_size(db, request, capsys):
    if db == "postgresql":
        request.getfixturevalue("pg_url")    # the server is there (the bench makes a schema of its own on it)
    assert api_bench.main(["--db", db, "--customers", "300", "--clients", "2", "--seconds", "1", "--debits", "4",
                           "--gateway-customers", "200"]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])["results"]
    assert figures["look_ups"]["look_ups"] > 0 and figures["look_ups"]["failed"] == 0
    assert figures["single_debits"]["outcomes"] == {"approved": 4}
    if shutil.which("haproxy"):   # two API processes behind HAProxy answered every look-up too
        assert figures["balanced"]["instances"] == 2
        assert figures["balanced"]["look_ups"] > 0 and figures["balanced"]["failed"] == 0
    assert figures["gateway"]["inquiries_per_s"] > 0 and figures["gateway"]["mismatches"] == 0
    for line in ("customer look-ups", "single debits", "gateway inquiries", "of the gateway's inquiry rate"):
        assert line in out

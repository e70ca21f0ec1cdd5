"""The seeded fault simulation of the posting path (tests/posting_sim.py, docs/ledger.md "Fault
simulation"), a short run of it in the suite: random interleavings of payments, repeats,
reversals before and after their payments, RRN reuse, database errors, lost COMMITs and process
kills, and on PostgreSQL two committers racing; after every step every answer and the whole
ledger are checked against the model and ``ledger verify`` holds. A failure names the seed and
the step, with the command that replays it. The long run is ``python -m scripts.simulate_postings``.
"""
from __future__ import annotations

import logging

import pytest

from ledger import group_commit, posting
from posting_sim_fault_steps import FAULTS
from posting_sim_run import databases, run, run_seed, summary


@pytest.fixture(autouse=True)
def _quiet_ledger(caplog):
    """The injected faults make the ledger log an error each, as it should: not worth keeping here."""
    caplog.set_level(logging.CRITICAL)


def test_a_dozen_seeds_on_sqlite():
    report = run("sqlite", range(12), 50)
    assert report.failures == [], summary(report, "sqlite", 50)
    assert (report.seeds, report.steps) == (12, 600)
    struck = {k[len("fault "):].split(":")[0] for k in report.stats if k.startswith("fault ")}
    assert set(FAULTS) <= struck, struck                       # every kind of fault struck somewhere
    for code in ("00", "12", "13", "25", "94", "96", "none"):  # and the answers they lead to were given
        assert report.stats[f"answer {code}"] > 0, code
    assert report.stats["timeout: requests dropped unposted"] > 0


def test_a_few_seeds_on_postgresql(pg_server_url):
    report = run("pg", range(4), 50, pg_url=pg_server_url)
    assert report.failures == [], summary(report, "pg", 50)
    assert report.stats["step race"] > 0
    assert report.stats["race: the second waited for the first's locks"] > 0   # the races did collide


@pytest.mark.parametrize("db", ["sqlite", "pg"])
def test_the_same_seed_gives_the_same_steps_and_answers(db, request):
    pg_url = request.getfixturevalue("pg_server_url") if db == "pg" else None
    dbs = databases(db, pg_url)
    try:
        first, again, other = (run_seed(dbs, seed, 30) for seed in (7, 7, 8))
    finally:
        dbs.close()
    assert first.problems == again.problems == other.problems == []
    assert first.transcript == again.transcript                # requests, faults, answers, receipt numbers
    assert first.stats == again.stats
    assert first.transcript != other.transcript


def test_the_simulation_finds_a_planted_defect(monkeypatch):
    """The checks have teeth: a committer that answers 96 for a lost COMMIT without looking it up
    (a payment that landed, denied) is caught, and the failure says how to replay it."""
    def blind(self, batch, due, lost_backend=None):
        return [posting.system_error()] * len(batch)

    monkeypatch.setattr(group_commit.Poster, "settle", blind)
    report = run("sqlite", range(10), 50)
    assert report.failures, summary(report, "sqlite", 50)
    seed, problems = report.failures[0]
    assert problems[0].startswith("step ") and "answered 96" in problems[0]
    assert f"--seed {seed} --steps 50" in summary(report, "sqlite", 50)


# --- what the simulation found ------------------------------------------------------------------

def test_seed_6018_with_today_closed_reverses_as_in_separate_batches():
    """The seed that found a reversal in its payment's batch posted on a closed business date (the
    rule alone: test_ledger_postings.py::test_reversal_in_the_batch_of_its_payment_on_a_closed_day...)."""
    report = run("sqlite", [6018], 12, close_today=True)
    assert report.failures == [], summary(report, "sqlite", 12, close_today=True)


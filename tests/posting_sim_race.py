"""Two committers (two gateway processes) racing on one PostgreSQL database, in a known order.

The first committer runs its batch up to its COMMIT and holds it there; the second then starts
its own batch and, when the two touch the same customers or keys, waits for the first's locks
(``pg_stat_activity`` says so); then the first's COMMIT goes. Whatever the second read, it read
after the first had decided, and the first never sees the second: the answers must be the
first batch's, then the second's, as if run one after the other. Sometimes the first's COMMIT is
lost (it landed or not: the first settles its postings by looking them up, after the second) or
the first process dies at it (its batch goes to its successor after the second has finished).
"""
from __future__ import annotations

import threading
import time

from sqlalchemy import text

from posting_sim_fault_steps import SETTLE_S, process
from posting_sim_faults import Fault, Killed

RACE_FAULTS = {"none": 12, "lost before": 2, "lost after": 2, "kill before": 2, "kill after": 2}


def race(sim) -> list:
    kind = sim.rng.choices(list(RACE_FAULTS), list(RACE_FAULTS.values()))[0]
    fault = None if kind == "none" else Fault(kind.split()[0], after=kind.endswith("after"))
    first, second = sim.requests(race_safe=True), sim.requests(race_safe=True)
    xs, ys = [p for _, _, p in first], [p for _, _, p in second]
    sim.log(f"  race, the first's COMMIT: {kind}")
    got, fired = run_both(sim, fault, xs, ys)
    errors = [f"committer {k} raised {v!r}" for k, v in got.items()
              if isinstance(v, BaseException) and not (k == "a" and isinstance(v, Killed) and fault.kind == "kill")]
    if fault is not None and [(s.kind, s.landed) for s in fired] != [(fault.kind, fault.after)]:
        errors.append(f"{fault} struck {fired}")
    if errors or len(got) != 2:
        sim.found += errors or ["a racing committer did not finish"]
        return []
    sim.stats[f"race, first's COMMIT {kind}"] += 1
    if fault is None or fault.after:
        expected_x = [sim.model.decide(p) for p in xs]
    expected_y = [sim.model.decide(p) for p in ys]
    if fault is not None and fault.kind == "lost":
        expected_x = [sim.model.lookup(p) for p in xs]
    elif fault is not None:   # killed: the successor gets the batch again
        sim.restart()
        got["a"], _ = process(sim.committer, xs, resent=True)
        expected_x = [sim.model.decide(p) for p in xs]
    sim.log("  first committer:")
    sim.answered(first, got["a"])
    sim.log("  second committer:")
    sim.answered(second, got["b"])
    return [(xs + ys, got["a"] + got["b"], expected_x + expected_y)]


def run_both(sim, fault: Fault | None, xs: list, ys: list) -> tuple[dict, list]:
    got: dict[str, object] = {}

    def run(name, committer, postings):
        try:
            got[name] = committer.poster.process(postings, [time.monotonic() + SETTLE_S] * len(postings))
        except BaseException as exc:  # noqa: BLE001 - a kill is expected; anything else is reported
            got[name] = exc

    a, b = sim.committer, sim.other
    a.faults.arm(fault)
    at_commit = a.faults.hold()
    first = threading.Thread(target=run, args=("a", a, xs))
    first.start()
    while not at_commit.wait(0.01) and first.is_alive():
        pass
    second = threading.Thread(target=run, args=("b", b, ys))
    second.start()
    if waits_for_locks(sim, b, second):
        sim.stats["race: the second waited for the first's locks"] += 1
    a.faults.release()
    first.join(120)
    second.join(120)
    fired = list(a.faults.fired)
    a.faults.disarm()
    return got, fired


def waits_for_locks(sim, b, thread: threading.Thread) -> bool:
    """Whether b's backend waits for a lock, polled until its batch ends, from a connection of
    neither committer. Not bounded by a short time: a lost first COMMIT is looked up under the
    customers' locks, and the second must be in their queue by then (however busy the machine)."""
    with sim.observer.connect() as conn:
        for _ in range(12_000):
            if not thread.is_alive():
                return False
            if conn.execute(text("select count(*) from pg_stat_activity where pid = any(:pids) "
                                 "and wait_event_type = 'Lock'"), {"pids": sorted(b.pids)}).scalar_one():
                return True
            conn.rollback()
            time.sleep(0.005)
    return False

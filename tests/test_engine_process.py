"""Real processes on PostgreSQL: three `gridpay engine` processes on one batch against a
`gridpay sim bank` process that drops answers and connections; one engine is killed with -9 in
the middle and restarted. Each debit is applied at the bank at most once, every unknown is
reversed, the bank's truth (its docs/spec/INTERFACE.md §7.1 day file) equals the ledger's, and the ledger verifies.
Also `gridpay debit now`: approved, declined, and a timeout (unknown + reversal under way)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import case, func, select

from config.settings import environment_for
from engines.plans import build_batch
from engines.tables import debit_chunks, debit_reversals
from config.clock import SYSTEM_CLOCK, Clock
from ledger.schema import debit_attempts, debits, payments, reversals
from ledger_helpers import assert_ledger_verifies
from identity_helpers import operator_env
from test_engine_support import BANK, ZMK_ENV, ZMK_HEX, seed, settings_tree, states

pytestmark = pytest.mark.slow


def gridpay(*args):
    return [sys.executable, "-m", "gridpay", *args]


class Procs:
    def __init__(self, tmp: Path, url: str):
        self.tmp, self.url = tmp, url
        self.all: list[subprocess.Popen] = []
        self.env = dict(os.environ)

    def sim(self, accounts: dict[str, tuple[int, int, str]], *extra: str) -> int:
        csv = self.tmp / "accounts.csv"
        csv.write_text("account_no,balance,limit,status\n" + "".join(f"{a},{b},{lim},{st}\n"
                                                                       for a, (b, lim, st) in accounts.items()))
        bd = Clock().business_date(SYSTEM_CLOCK.now()).isoformat()
        p = subprocess.Popen(gridpay("sim", "bank", "--bank", BANK, "--zmk-env", ZMK_ENV, "--accounts", str(csv),
                                     "--business-date", bd, "--day-file-dir", str(self.tmp / "bankfile"), *extra),
                             env={**os.environ, ZMK_ENV: ZMK_HEX}, stdout=subprocess.PIPE, text=True)
        self.all.append(p)
        self.sim_proc = p
        return json.loads(p.stdout.readline())["port"]

    def configure(self, port: int, **debit) -> dict:
        self.env = {**os.environ, **environment_for(settings_tree(self.url, port, str(self.tmp / "drop"), **debit)),
                    ZMK_ENV: ZMK_HEX}
        return self.env

    def engine(self, name: str) -> subprocess.Popen:
        p = subprocess.Popen(gridpay("engine", "--id", name, "--poll", "0.2", "--lease", "4", "--chunks-ahead", "2",
                                     "--log-file", str(self.tmp / f"{name}.log")),
                             env=self.env, stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        assert "running" in line, (line, (self.tmp / f"{name}.log").read_text())
        self.all.append(p)
        return p

    def stop_sim(self) -> dict:
        self.sim_proc.send_signal(signal.SIGTERM)
        out, _ = self.sim_proc.communicate(timeout=60)
        return json.loads(out.strip().splitlines()[-1])

    def close(self):
        for p in self.all:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def procs(tmp_path, pg_url):
    p = Procs(tmp_path, pg_url)
    yield p
    p.close()


def wait_until(cond, timeout=180, step=0.25, what=""):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def open_work(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        busy = conn.execute(select(func.count()).select_from(debits)
                            .where(debits.c.state.in_(("pending", "sent")))).scalar_one()
        revs = conn.execute(select(func.count()).select_from(debit_reversals)
                            .where(debit_reversals.c.state == "pending")).scalar_one()
    return busy, revs


def day_file(path: Path) -> dict[str, tuple[str, int]]:
    """RRN -> (status S/R, amount) from the bank's §7.1 file; asserts no RRN twice."""
    lines = path.read_text(encoding="gbk").strip().split("\n")
    out = {}
    for line in lines[1:]:
        _, _, _, _stan, rrn, _cust, amount, status, _ = line.split("|")
        assert rrn not in out, f"the bank applied RRN {rrn} twice"
        out[rrn] = (status, int(amount))
    return out


def mismatch_story(engine, rrns: set[str], bank: dict, stats: list, sim: dict) -> str:
    """Each debit the bank and the ledger disagree on, with its history, and the processes' counters."""
    lines = []
    with engine.connect() as conn:
        for rrn in sorted(rrns):
            d = conn.execute(select(debits.c.debit_id, debits.c.state).where(debits.c.rrn == rrn)).one()
            lines.append(f"RRN {rrn}: bank {bank.get(rrn)}, ledger debit {d.debit_id} {d.state}")
            a = debit_attempts.c
            for h in conn.execute(select(a.at, a.event, a.mti, a.response_code, a.detail, a.actor)
                                  .where(a.debit_id == d.debit_id).order_by(a.at)):
                lines.append(f"    {h.at:%H:%M:%S.%f} {h.actor} {h.event} {h.mti} {h.response_code} {h.detail}")
    lines += [f"engine stats: {st}" for st in stats] + [f"bank: {sim}"]
    return "\n".join(lines)


def test_three_engines_kill9_drops_exactly_once(procs, pg_url):
    n = 3000
    engine, numbers = seed(pg_url, n)
    port = procs.sim({f"A{c}": (10_000_000, 0, "A") for c in numbers}, "--latency-ms", "5", "--latency-dist",
                     "exponential", "--drop-after-apply", "0.01", "--drop-before-apply", "0.005",
                     "--disconnect", "0.0005", "--seed", "11")
    procs.configure(port, timeout_s=2.0, reversal_interval_s=2.0, reversal_max=3, connections=2)
    with engine.begin() as conn:
        s = build_batch(conn, bank_code=BANK, at=SYSTEM_CLOCK.now(), clock=Clock(), chunk_size=100)
    assert s.chunks == 30
    engines = {name: procs.engine(name) for name in ("e1", "e2", "e3")}
    # kill -9 the second engine in the middle of the batch: the bank stands still (SIGSTOP) from a
    # third approved until the kill, so that a loaded machine's slow poll cannot miss the middle
    wait_until(lambda: states(engine).get("approved", 0) >= n // 3, step=0.05, what="a third approved")
    procs.sim_proc.send_signal(signal.SIGSTOP)
    try:
        engines["e2"].send_signal(signal.SIGKILL)
        engines["e2"].wait()
        killed_at = states(engine)
    finally:
        procs.sim_proc.send_signal(signal.SIGCONT)
    # debits not yet sent, or sent and unanswered (the bank stands still): the batch is mid-way
    assert killed_at.get("pending", 0) + killed_at.get("sent", 0) > 0, "the batch finished before the kill"
    time.sleep(1.0)
    engines["e2"] = procs.engine("e2")          # restarted under the same name: takes its chunks back
    wait_until(lambda: open_work(engine) == (0, 0), what="every debit settled and every reversal answered")
    for p in engines.values():
        p.send_signal(signal.SIGTERM)
    stats = [json.loads(p.communicate(timeout=60)[0].strip().splitlines()[-1]) for p in engines.values()]
    sim = procs.stop_sim()
    final = states(engine)
    assert set(final) <= {"approved", "declined", "reversed", "unknown"}, final
    assert final.get("reversed", 0) > 0                       # drops happened and were reversed
    with engine.connect() as conn:
        rows = conn.execute(select(debits.c.debit_id, debits.c.rrn, debits.c.state, debits.c.amount)).all()
        paid = set(conn.execute(select(payments.c.debit_id).where(payments.c.debit_id.is_not(None))).scalars())
        reversed_pay = set(conn.execute(select(payments.c.debit_id).join(
            reversals, reversals.c.payment_id == payments.c.payment_id)).scalars())
        # a send answered A0 applied nothing and is followed by one under a new identity (§4.7)
        sends = func.sum(case((debit_attempts.c.event == "sent", 1), else_=0))
        refused = func.sum(case((debit_attempts.c.event == "mac_refused", 1), else_=0))
        sent_twice = conn.execute(select(debit_attempts.c.debit_id).group_by(debit_attempts.c.debit_id)
                                  .having(sends - refused > 1)).all()
        chunk_states = set(conn.execute(select(debit_chunks.c.state)).scalars())
    assert not sent_twice                                     # one identity per debit, written once
    assert chunk_states == {"done"}
    bank = day_file(Path(sim["day_file"]))
    assert sim["applied"] == len(bank)
    ledger_held = {r.rrn for r in rows if r.debit_id in paid and r.debit_id not in reversed_pay}
    bank_held = {rrn for rrn, (status, _) in bank.items() if status == "S"}
    assert bank_held == ledger_held, mismatch_story(engine, bank_held ^ ledger_held, bank, stats, sim)
    assert all(r.state == "approved" for r in rows if r.rrn in bank_held)
    for r in rows:
        if r.state in ("reversed", "unknown"):
            assert bank.get(r.rrn, ("R", 0))[0] == "R"         # reversed at the bank (or never applied)
    assert sum(st["stats"].get("orphans_reversed", 0) for st in stats) >= 0
    assert_ledger_verifies(engine)
    engine.dispose()


def run_debit_now(env, customer, timeout=120):
    return subprocess.run(gridpay("debit", "now", customer, "--pickup", "3"), env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_debit_now_approved_declined_and_unknown(procs, pg_url):
    engine, numbers = seed(pg_url, 3)
    port = procs.sim({f"A{numbers[0]}": (1_000_000, 0, "A"), f"A{numbers[1]}": (100, 0, "A"),
                      f"A{numbers[2]}": (1_000_000, 0, "A")})
    wang = operator_env(engine, "wang", ["operations"], {})["GRIDPAY_OPERATOR_TOKEN"]
    env = {**procs.configure(port, timeout_s=2.0, reversal_interval_s=1.0, reversal_max=2),
           "GRIDPAY_OPERATOR_TOKEN": wang}
    ok = run_debit_now(env, numbers[0])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "APPROVED" in ok.stdout and "the bills are paid" in ok.stdout
    no = run_debit_now(env, numbers[1])
    assert no.returncode == 1 and "DECLINED 51 (insufficient funds)" in no.stdout, no.stdout + no.stderr
    again = run_debit_now(env, numbers[0])
    assert again.returncode != 0 and "nothing to debit" in again.stderr
    procs.stop_sim()
    # a bank that takes the money and never answers: unknown, and the reversal is under way
    port = procs.sim({f"A{numbers[2]}": (1_000_000, 0, "A")}, "--drop-after-apply", "1.0")
    env = {**procs.configure(port, timeout_s=2.0, reversal_interval_s=1.0, reversal_max=2),
           "GRIDPAY_OPERATOR_TOKEN": wang}
    unk = run_debit_now(env, numbers[2])
    assert unk.returncode == 3, unk.stdout + unk.stderr
    assert "OUTCOME UNKNOWN - no answer within 2 s" in unk.stdout and "reversal" in unk.stdout
    assert states(engine) == {"approved": 1, "declined": 1, "unknown": 1}
    with engine.connect() as conn:
        rev = conn.execute(select(debit_reversals)).one()
    assert rev.attempts >= 1                                   # the 0420 went out before the command ended
    # a running engine carries the reversal on (store and forward) until it gives up
    procs.engine("carrier")
    wait_until(lambda: open_work(engine) == (0, 0), timeout=60, what="the reversal schedule to finish")
    with engine.connect() as conn:
        rev = conn.execute(select(debit_reversals)).one()
    assert rev.state == "unanswered" and rev.attempts == 3     # 0420 + reversal_max 0421s
    assert_ledger_verifies(engine)
    engine.dispose()


def test_debit_now_through_a_running_engine(procs, pg_url):
    engine, numbers = seed(pg_url, 2)
    port = procs.sim({f"A{c}": (1_000_000, 0, "A") for c in numbers}, "--latency-ms", "50")
    env = operator_env(engine, "wang", ["operations"], procs.configure(port, timeout_s=5.0))
    procs.engine("counter-engine")
    res = run_debit_now(env, numbers[0])
    assert res.returncode == 0 and "APPROVED" in res.stdout, res.stdout + res.stderr
    with engine.connect() as conn:
        owner = conn.execute(select(debit_chunks.c.owner)).scalar_one()
    assert owner == "counter-engine"                           # the running engine's link sent it
    engine.dispose()

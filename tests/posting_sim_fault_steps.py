"""The posting simulation's fault steps: a batch through the committer's worker (``Poster``) with
faults armed in its transactions, and what the bank must get for it (docs/ledger.md "Group
commit", docs/spec/INTERFACE.md §6):
- a retried failure (busy, a connection broken before the COMMIT, a unique-key conflict: rerun
  posting by posting): the usual answers;
- a statement failing: 96 for the whole batch, nothing applied;
- the COMMIT lost (landed or not): each posting looked up once the database answers - its stored
  answer, else 96; no answer at all when the database stays away past the deadline;
- the process killed (at a statement, before or after its COMMIT): replaced on the same
  database; a worker's batch goes to its successor marked resent (its answers are the usual
  ones, replays where it had landed; looked up if the successor's run fails too); a whole
  gateway's requests are never answered, and the bank's follow-ups find out;
- a fault again while the batch is rerun posting by posting: the postings before it keep their
  answers, the one it strikes gets the single fault's, and a failed statement ends the rerun.
"""
from __future__ import annotations

import time

from posting_sim_faults import AT_COMMIT, FOREVER, Fault, Killed, Strike
from posting_sim_model import NO_ANSWER, NOT_APPLIED

FAULTS = {"error": 4, "broken": 2, "busy": 2, "integrity": 2, "lost before": 2, "lost after": 3,
          "lost, database back": 2, "lost unknown": 2, "worker kill": 4, "gateway kill": 3, "resent then error": 2,
          "rerun then error": 1, "rerun then lost": 2, "rerun then kill": 2}
SETTLE_S = 10.0      # an unknown commit's deadline (the bank's timeout)
DOWN_S = 0.2         # the deadline when the database stays away: it passes, the outcome stays unknown


def fault_step(sim) -> list:
    rng = sim.rng
    kind = rng.choices(list(FAULTS), list(FAULTS.values()))[0]
    made = sim.requests()
    postings = [p for _, _, p in made]
    faults = make_faults(rng, kind, len(postings))
    sim.log(f"  fault {kind}: {faults}")
    outcomes, fired = process(sim.committer, postings, *faults)
    for strike in fired:
        sim.stats[f"fault {kind}: {strike.kind} ({strike.where})"] += 1
    if kind.startswith("rerun"):   # the first strike sent the batch posting by posting
        expected = expect(sim.model, postings, fired[1] if len(fired) > 1 else None, faults[1].transaction)
    else:
        expected = expect(sim.model, postings, fired[0], None, faults[0].down >= FOREVER)
    if expected is not None:
        sim.answered(made, outcomes)
        return [(postings, outcomes, expected)]
    sim.restart()   # killed
    if kind == "gateway kill":
        sim.answered(made, None)
        return []
    successor = [Fault("error", rng.randint(1, 26))] if kind == "resent then error" else []
    outcomes, fired = process(sim.committer, postings, *successor, resent=True)
    if successor:
        sim.stats[f"fault resent run: error ({fired[0].where})"] += 1
        expected = [sim.model.lookup(p) for p in postings]   # looked up, never a blind 96
    else:
        expected = [sim.model.decide(p) for p in postings]
    sim.answered(made, outcomes)
    return [(postings, outcomes, expected)]


def make_faults(rng, kind: str, n: int) -> list[Fault]:
    at = rng.randint(1, 26)
    if kind in ("error", "broken", "busy", "integrity"):
        return [Fault(kind, at)]
    if kind == "lost before" or kind == "lost after":
        return [Fault("lost", after=kind == "lost after")]
    if kind == "lost, database back":
        return [Fault("lost", after=rng.random() < 0.5, down=rng.randint(1, 4))]
    if kind == "lost unknown":
        return [Fault("lost", after=rng.random() < 0.5, down=FOREVER)]
    if kind.startswith("rerun"):
        second = kind.split()[-1]
        posting = rng.randrange(n)
        if second == "error":
            then = Fault("error", rng.randint(1, 22), transaction=posting)
        elif second == "lost":
            then = Fault("lost", after=rng.random() < 0.5, transaction=posting)
        else:
            then = kill(rng, rng.randint(1, 22), posting)
        return [Fault("integrity", at), then]
    return [kill(rng, at)]


def kill(rng, at: int, transaction: int = 0) -> Fault:
    where = rng.choice(("statement", "before", "after"))
    return Fault("kill", at if where == "statement" else AT_COMMIT, after=where == "after", transaction=transaction)


def expect(model, postings: list, strike: Strike | None, rerun_at: int | None, unknown: bool = False):
    """What each posting must get once ``strike`` struck: the batch's transaction, or (``rerun_at``)
    the rerun of that posting, after the postings before it had gone through. None when the
    process was killed (the model has then applied whatever had landed)."""
    if rerun_at is None:
        done, struck, rest = [], postings, []
    else:
        done, struck, rest = postings[:rerun_at], postings[rerun_at:rerun_at + 1], postings[rerun_at + 1:]
    decided = [model.decide(p) for p in done]
    if strike is None or strike.kind in ("busy", "integrity") or (strike.kind, strike.where) == ("broken", "statement"):
        return decided + [model.decide(p) for p in struck + rest]
    if strike.kind == "error" and strike.where == "statement":
        return decided + [NOT_APPLIED] * (len(struck) + len(rest))   # a rerun stops at a failed statement
    if strike.landed:
        for p in struck:
            model.decide(p)
    if strike.kind == "kill":
        return None
    return decided + [NO_ANSWER if unknown else model.lookup(p) for p in struck] + [model.decide(p) for p in rest]


def process(committer, postings: list, *faults: Fault, resent: bool = False):
    """The committer's worker runs the batch with the faults armed: (outcomes or None if killed, strikes)."""
    down = any(f.down >= FOREVER for f in faults)
    deadline = time.monotonic() + (DOWN_S if down else SETTLE_S)
    committer.faults.arm(*faults)
    try:
        outcomes = committer.poster.process(postings, [deadline] * len(postings),
                                            [True] * len(postings) if resent else None)
    except Killed:
        outcomes = None
    finally:
        fired = list(committer.faults.fired)
        committer.faults.disarm()
    assert len(fired) >= min(1, len(faults)), f"{faults} did not strike"
    return outcomes, fired

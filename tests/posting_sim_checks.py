"""After every step of the posting simulation: the ledger's rows are the model's, ``ledger verify``
holds, and every answer the bank got is the one the model says it should have got.

What the rows must say (docs/ledger.md): a payment the model applied exists exactly once under
its request identity, with its customer, amount and business date, and its receipt number is
the one the bank was told; no other payment exists; exactly the model's payments are reversed,
each once; every bill has the model's allocations, every customer the model's prepaid balance;
``bank_requests`` holds the model's stored answers (a 94 for a clashing identity and a 96 are
not stored) and ``orphan_reversals`` the model's orphans.
"""
from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select, text
from sqlalchemy.exc import ProgrammingError

from ledger.ids import receipt_no
from ledger.posting import Outcome
from ledger.schema import allocations, bank_requests, orphan_reversals, payments, prepaid_movements, reversals
from ledger.verify import verify
from posting_sim_model import Expected, Model


def ledger_problems(engine, model: Model) -> list[str]:
    """Where the ledger differs from the model (learning new payments' receipt numbers on the way)."""
    try:
        problems = [f"ledger verify: {f}" for f in verify(engine)]
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                rows = read(conn)
    except ProgrammingError as exc:   # a table not found once in CI (not reproduced): say where we looked
        raise RuntimeError(f"{exc.orig}; the connections see: {_where(engine)}") from exc
    problems += _payments(model, rows)
    if rows["reversed"] != Counter(p.identity for p in model.payments if p.reversed):
        problems.append(f"reversed payments {dict(rows['reversed'])}, model "
                        f"{sorted(p.identity for p in model.payments if p.reversed)}")
    problems += _differences("allocated on bill", rows["allocated"], model.allocated())
    problems += _differences("prepaid balance of", rows["prepaid"], model.prepaid())
    problems += _differences("stored answer (digest, code) of request", rows["requests"], model.stored_codes())
    if rows["orphans"] != model.orphan_keys():
        problems.append(f"orphan reversals {sorted(rows['orphans'])}, model {sorted(model.orphan_keys())}")
    return problems


def _where(engine) -> str:
    """The search path, schemas and ledger tables a new connection of ``engine`` sees."""
    if engine.dialect.name != "postgresql":
        return "sqlite"
    with engine.connect() as conn:
        path, schemas = conn.execute(text("select current_setting('search_path'), current_schemas(false)")).one()
        tables = conn.execute(text("select count(*) from pg_tables where schemaname = any(current_schemas(false))"))
        return f"search_path {path!r}, schemas {schemas}, {tables.scalar()} tables; pool {engine.pool.status()}"


def read(conn) -> dict:
    pay = payments.c
    paid = conn.execute(select(pay.payment_id, pay.bank_code, pay.id_year, pay.transmitted, pay.stan,
                               pay.customer_no, pay.amount, pay.business_date, pay.receipt_no)
                        .where(pay.channel == "C")).all()
    ident = {r.payment_id: (r.bank_code, r.id_year, r.transmitted, r.stan) for r in paid}
    rev = conn.execute(select(reversals.c.payment_id)).scalars().all()
    al, pm, br, orph = allocations.c, prepaid_movements.c, bank_requests.c, orphan_reversals.c
    return {
        "payments": paid,
        "reversed": Counter(ident.get(p, ("not a counter payment", p)) for p in rev),
        "allocated": {b: int(s) for b, s in conn.execute(select(al.bill_id, func.sum(al.amount)).group_by(al.bill_id))},
        "prepaid": {c: int(s) for c, s in conn.execute(select(pm.customer_no, func.sum(pm.amount))
                                                        .group_by(pm.customer_no))},
        "requests": {(r.bank_code, r.id_year, r.transmitted, r.stan): (r.content_digest, r.response_code)
                     for r in conn.execute(select(br.bank_code, br.id_year, br.transmitted, br.stan,
                                                  br.content_digest, br.response_code))},
        "orphans": {tuple(r) for r in conn.execute(select(orph.bank_code, orph.id_year, orph.orig_transmitted,
                                                          orph.orig_stan))},
    }


def _payments(model: Model, rows: dict) -> list[str]:
    problems = []
    by_identity: dict[tuple, list] = {}
    for r in rows["payments"]:
        by_identity.setdefault((r.bank_code, r.id_year, r.transmitted, r.stan), []).append(r)
    for pay in model.payments:
        found = by_identity.pop(pay.identity, [])
        if len(found) != 1:
            problems.append(f"payment {pay.identity} of {pay.amount} for {pay.customer_no}: {len(found)} rows, not 1")
            continue
        r = found[0]
        if (r.customer_no, int(r.amount), r.business_date) != (pay.customer_no, pay.amount, pay.business_date):
            problems.append(f"payment {pay.identity}: row says {r.customer_no} {int(r.amount)} {r.business_date}, "
                            f"model {pay.customer_no} {pay.amount} {pay.business_date}")
        if r.receipt_no != receipt_no(r.business_date, r.payment_id):
            problems.append(f"payment {pay.identity}: receipt {r.receipt_no} is not R+date+id")
        model.learn_receipt(pay, r.receipt_no)
        if pay.receipt != r.receipt_no:
            problems.append(f"payment {pay.identity}: receipt {r.receipt_no}, the bank was told {pay.receipt}")
    for ident, found in by_identity.items():
        problems.append(f"payment {ident} of {[int(r.amount) for r in found]} is in the ledger, not in the model")
    return problems


def _differences(what: str, got: dict, want: dict) -> list[str]:
    keys = sorted(set(got) | set(want), key=repr)
    return [f"{what} {k}: ledger {got.get(k)}, model {want.get(k)}" for k in keys if got.get(k, 0) != want.get(k, 0)]


def answer_problems(model: Model, postings: list, outcomes: list[Outcome], expected: list[Expected]) -> list[str]:
    """Each answer against the model's: code, fields (a receipt number is the payment's) and replayed."""
    if not len(postings) == len(outcomes) == len(expected):
        return [f"{len(postings)} requests, {len(outcomes)} answers, {len(expected)} expected"]
    problems = []
    for p, got, want in zip(postings, outcomes, expected):
        fields = dict(want.fields)
        if want.payment is not None:
            fields["receipt_no"] = model.payments[want.payment].receipt
        if (got.response_code, got.fields, got.replayed) != (want.code, fields, want.replayed):
            problems.append(f"{describe(p)}: answered {got.response_code or 'nothing'} {got.fields} "
                            f"replayed={got.replayed} ({got.detail}); model {want.code or 'nothing'} {fields} "
                            f"replayed={want.replayed}")
    return problems


def inquiry_problems(model: Model, customer_no: str, result) -> list[str]:
    got = (result.response_code, list(result.bills), result.total_due, result.prepaid_balance)
    want = model.inquire(customer_no)
    return [] if got == want else [f"inquiry {customer_no}: ledger {got}, model {want}"]


def describe(p) -> str:
    kind = "0200" if hasattr(p, "method") else "0420"
    extra = f"CN {p.customer_no}" if kind == "0200" else f"of {p.orig_transmitted}/{p.orig_stan} CN {p.customer_no}"
    return f"{kind} {p.bank_code}/{p.transmitted}/{p.stan} RRN {p.rrn} amount {p.amount} {extra}"

"""Money that leaves the ledger, on SQLite and PostgreSQL: a bank file and a finance statement through
the real reconciliation to the journal (a matched remittance clears the bank's clearing account
into the collection account; a partly matched one posts what arrived and leaves the difference;
an unmatch posts the red reversal; the same statement twice posts nothing), refunds paid out by
an operator or by the statement's debit line (never twice), and ``ledger verify`` after each."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, update

from config.settings import BusinessConfig
from ledger.errors import Refused
from ledger.journal import COLLECTION, REFUNDS_PAYABLE, bank_clearing
from ledger.posting import Remittance, post_one
from ledger.recon.finance import FinanceRules, reconcile_statement
from ledger.recon.manual import match_items, unmatch
from ledger.recon.matching import reconcile_bank_file
from ledger.recon.remittances import settle_remittance
from ledger.recon.resolutions import resolve_item
from ledger.recon_tables import recon_items, recon_runs
from ledger.refunds import load_refund, record_payout_in, request_refund
from ledger.schema import journal_entries, journal_lines, refunds
from ledger.synchronous_posting import post
from ledger_helpers import T0, assert_ledger_verifies, payment
from test_recon_finance import REMIT, camt, ntry
from test_recon_support import BANK, DAY, build_world, write_bank_file

REF = f"{BANK}{DAY:%Y%m%d}"
# the world's payments of BANK less reversals: P1, P3, P4, P6 and the approved debit DA
COLLECTED = 10_000 + 30_000 + 40_000 + 60_000 + 80_000


@pytest.fixture
def world(db_url, tmp_path):
    """The reconciliation tests' bank world; its bank file reconciled (run expects REMIT)."""
    w = build_world(db_url)
    assert reconcile_bank_file(w.engine, write_bank_file(tmp_path, w.lines), actor="alice").status == "applied"
    with w.engine.connect() as conn:
        w.run_id = conn.execute(select(recon_runs.c.run_id).where(recon_runs.c.kind == "bank")).scalar_one()
    yield w
    w.engine.dispose()


def balances(engine) -> dict[str, int]:
    jl = journal_lines.c
    with engine.connect() as conn:
        return {a: int(s) for a, s in conn.execute(select(jl.account, func.sum(jl.amount)).group_by(jl.account))}


def entries(engine, kind: str) -> list:
    je = journal_entries.c
    with engine.connect() as conn:
        return conn.execute(select(journal_entries).where(je.kind == kind).order_by(je.entry_id)).all()


def statement(tmp_path, name: str, *entries_: str) -> object:
    path = tmp_path / name
    path.write_bytes(camt(8, list(entries_)))
    return path


def reconcile(engine, path, **kw):
    result = reconcile_statement(engine, path, actor="operator:fin", **kw)
    assert result.status in ("applied", "duplicate"), result.message
    assert_ledger_verifies(engine)
    return result


def test_a_matched_remittance_moves_from_the_bank_clearing_to_the_collection_account_once(world, tmp_path):
    assert balances(world.engine)[bank_clearing(BANK)] == COLLECTED
    first = statement(tmp_path, "s1.xml", ntry(8, REMIT, ref=REF, acct_ref="A1"))
    item = reconcile(world.engine, first).items[0]
    assert (item["kind"], item["status"]) == ("remittance", "matched")
    after = balances(world.engine)
    assert (after[bank_clearing(BANK)], after[COLLECTION]) == (COLLECTED - REMIT, REMIT)
    [entry] = entries(world.engine, "remittance")
    assert (entry.ref_type, entry.ref_id, entry.business_date) == ("recon_item", str(item["item_id"]), DAY + timedelta(1))
    # the same statement again, and an overlapping one carrying the same entry: nothing more moves
    assert reconcile(world.engine, first).status == "duplicate"
    overlap = statement(tmp_path, "s2.xml", ntry(8, REMIT, ref=REF, acct_ref="A1"), ntry(8, 700, ref="MISC"))
    assert len(reconcile(world.engine, overlap).items) == 1
    assert len(entries(world.engine, "remittance")) == 1 and balances(world.engine) == after
    # settling the item again posts nothing; the posting module itself refuses a second movement
    with world.engine.begin() as conn:
        assert settle_remittance(conn, item["item_id"], actor="operator:fin") == {BANK: REMIT}
        again = post_one(conn, Remittance(item["item_id"], BANK, REMIT, DAY, "operator:fin"))
    assert again.response_code == "12" and "posted already" in again.detail
    assert len(entries(world.engine, "remittance")) == 1 and balances(world.engine) == after


def test_a_partly_matched_remittance_posts_what_arrived_and_the_clearing_keeps_the_difference(world, tmp_path):
    short = REMIT - 500
    item = reconcile(world.engine, statement(tmp_path, "s.xml", ntry(8, short, ref=REF))).items[0]
    assert (item["kind"], item["status"], item["ledger_amount"]) == ("remittance", "open", REMIT)
    assert "difference -500" in item["detail"] and "keeps the difference" in item["detail"]
    after = balances(world.engine)
    assert (after[bank_clearing(BANK)], after[COLLECTION]) == (COLLECTED - short, short)
    # the open item accepted as it is: what arrived stays posted, nothing moves again
    resolve_item(world.engine, item["item_id"], "accept", actor="operator:fin", reason="bank fee")
    assert balances(world.engine) == after and len(entries(world.engine, "remittance")) == 1
    assert_ledger_verifies(world.engine)


def test_within_tolerance_what_arrived_is_posted(world, tmp_path):
    path = statement(tmp_path, "s.xml", ntry(8, REMIT + 5, ref=REF))
    item = reconcile(world.engine, path, rules=FinanceRules(amount_tolerance_fen=10)).items[0]
    assert item["status"] == "matched"
    assert balances(world.engine)[bank_clearing(BANK)] == COLLECTED - REMIT - 5


def test_a_credit_matched_by_hand_is_remitted_and_its_unmatch_posts_the_red_reversal(world, tmp_path):
    item = reconcile(world.engine, statement(tmp_path, "s.xml", ntry(8, REMIT, ref="TRANSFER 23 NOV"))).items[0]
    assert (item["kind"], item["status"]) == ("credit", "open")
    assert COLLECTION not in balances(world.engine)
    match_id = match_items(world.engine, [item["item_id"]], run_ids=[world.run_id], actor="operator:fin",
                           note="the bank's remittance without its reference")
    assert balances(world.engine)[COLLECTION] == REMIT
    assert_ledger_verifies(world.engine)
    unmatch(world.engine, match_id, actor="operator:fin", reason="wrong run")
    after = balances(world.engine)
    assert (after[COLLECTION], after[bank_clearing(BANK)]) == (0, COLLECTED)
    [red] = entries(world.engine, "remittance_reversal")
    assert red.ref_id == str(item["item_id"]) and len(entries(world.engine, "remittance")) == 1   # nothing deleted
    assert_ledger_verifies(world.engine)
    match_items(world.engine, [item["item_id"]], run_ids=[world.run_id], actor="operator:fin", note="again")
    assert balances(world.engine)[COLLECTION] == REMIT and len(entries(world.engine, "remittance")) == 2
    assert_ledger_verifies(world.engine)


def test_a_partly_matched_remittance_claims_its_run_and_the_remainder_is_matched(world, tmp_path):
    part = reconcile(world.engine, statement(tmp_path, "s1.xml", ntry(8, 30_000, ref=REF))).items[0]
    assert (part["status"], part["remits_run_id"], part["ledger_amount"]) == ("open", world.run_id, REMIT)
    rest = reconcile(world.engine, statement(tmp_path, "s2.xml", ntry(8, REMIT - 30_000, ref=REF, booked="2026-11-25"))).items[0]
    assert (rest["kind"], rest["status"], rest["ledger_amount"]) == ("remittance", "matched", REMIT - 30_000)
    assert f"30000 of its {REMIT} remitted already" in rest["detail"]
    after = balances(world.engine)
    assert (after[bank_clearing(BANK)], after[COLLECTION]) == (COLLECTED - REMIT, REMIT)
    assert len(entries(world.engine, "remittance")) == 2


def test_credits_of_one_statement_for_one_run_add_up_to_what_it_expects(world, tmp_path):
    items = reconcile(world.engine, statement(tmp_path, "s.xml", ntry(8, 20_000, ref=REF, acct_ref="A1"),
                                              ntry(8, REMIT - 20_000, ref=REF, acct_ref="A2"),
                                              ntry(8, 5_000, ref=REF, acct_ref="A3"))).items
    assert [i["status"] for i in items] == ["open", "matched", "open"]
    assert "already matched to another remittance" in items[2]["detail"] and items[2]["remits_run_id"] is None
    assert balances(world.engine)[bank_clearing(BANK)] == COLLECTED - REMIT


def test_a_full_credit_after_a_partial_one_is_not_remitted_twice(world, tmp_path):
    reconcile(world.engine, statement(tmp_path, "s1.xml", ntry(8, 30_000, ref=REF)))
    full = reconcile(world.engine, statement(tmp_path, "s2.xml", ntry(8, REMIT, ref=REF, booked="2026-11-25"))).items[0]
    assert (full["kind"], full["status"], full["remits_run_id"]) == ("remittance", "open", None)
    assert f"expects {REMIT - 30_000} (30000 of its {REMIT} remitted already)" in full["detail"]
    assert "nothing posted" in full["detail"]
    after = balances(world.engine)
    assert (after[bank_clearing(BANK)], after[COLLECTION]) == (COLLECTED - 30_000, 30_000)
    # by hand neither: the run has only the rest to remit
    with pytest.raises(Refused, match=f"ledger side to {REMIT - 30_000}"):
        match_items(world.engine, [full["item_id"]], run_ids=[world.run_id], actor="operator:fin", note="the full one")
    assert balances(world.engine) == after


def test_an_unmatched_partial_claims_its_run_again(world, tmp_path):
    short = REMIT - 500
    part = reconcile(world.engine, statement(tmp_path, "s1.xml", ntry(8, short, ref=REF))).items[0]
    match_id = match_items(world.engine, [part["item_id"]], run_ids=[world.run_id], actor="operator:fin",
                           tolerance=500, note="the bank's fee")
    assert_ledger_verifies(world.engine)
    unmatch(world.engine, match_id, actor="operator:fin", reason="the fee is refunded later")
    assert len(entries(world.engine, "remittance")) == 1 and not entries(world.engine, "remittance_reversal")
    full = reconcile(world.engine, statement(tmp_path, "s2.xml", ntry(8, REMIT, ref=REF, booked="2026-11-25"))).items[0]
    assert full["status"] == "open" and f"({short} of its {REMIT} remitted already)" in full["detail"]
    assert balances(world.engine)[bank_clearing(BANK)] == COLLECTED - short
    # a partly matched credit is matched by hand to its own run only
    other = reconcile_bank_file(world.engine, write_bank_file(tmp_path, [], day=DAY + timedelta(1)), actor="alice")
    with pytest.raises(Refused, match=f"remits bank run {world.run_id}: match it to that run"):
        match_items(world.engine, [part["item_id"]], run_ids=[other.run_id], actor="operator:fin", tolerance=REMIT)
    assert_ledger_verifies(world.engine)


@pytest.fixture
def refundable(world):
    """C1 (its bill paid by P1) pays 50,000 more: prepaid, refundable."""
    assert post(world.engine, [payment(BANK, "C1", 50_000, at=T0 + timedelta(hours=2))])[0].ok
    return world


def refund(engine, amount: int):
    paid = request_refund(engine, "C1", amount, actor="operator:li", reason="moving out", now=T0)
    assert paid.status == "paid"
    return paid


def payout(engine, refund_id: int, reference: str = "TX-1"):
    with engine.begin() as conn:
        return record_payout_in(conn, refund_id, actor="operator:cai", reference=reference, now=T0,
                                business=BusinessConfig())


def test_an_operator_payout_moves_the_refund_out_and_the_statement_line_matches_it(refundable, tmp_path):
    engine = refundable.engine
    r = refund(engine, 3_000)
    assert balances(engine)[REFUNDS_PAYABLE] == -3_000
    out = payout(engine, r.refund_id)
    assert (out.paid_out_by, out.payout_reference) == ("operator:cai", "TX-1")
    after = balances(engine)
    assert (after[REFUNDS_PAYABLE], after[COLLECTION]) == (0, -3_000)
    assert_ledger_verifies(engine)
    item = reconcile(engine, statement(tmp_path, "s.xml", ntry(8, 3_000, "DBIT", ref=f"rfd{r.refund_id:06d}"))).items[0]
    assert (item["kind"], item["status"], item["customer_no"]) == ("refund", "matched", "C1")
    assert "operator:cai recorded" in item["detail"]
    assert balances(engine) == after and len(entries(engine, "refund_payout")) == 1
    with pytest.raises(Refused, match="paid out already"):
        payout(engine, r.refund_id, "TX-2")


def test_a_statement_line_pays_the_refund_out_and_the_operator_cannot_pay_it_again(refundable, tmp_path):
    engine = refundable.engine
    r = refund(engine, 4_000)
    item = reconcile(engine, statement(tmp_path, "s.xml", ntry(8, 4_000, "DBIT", ref=f"RFD{r.refund_id}"))).items[0]
    assert (item["kind"], item["status"]) == ("refund", "matched")
    with engine.connect() as conn:
        paid = load_refund(conn, r.refund_id)
    assert (paid.paid_out_by, paid.payout_reference) == ("operator:fin", f"statement item {item['item_id']}")
    assert (balances(engine)[REFUNDS_PAYABLE], balances(engine)[COLLECTION]) == (0, -4_000)
    [entry] = entries(engine, "refund_payout")
    assert entry.business_date == DAY + timedelta(1)                 # the debit's booking date
    with pytest.raises(Refused, match="paid out already"):
        payout(engine, r.refund_id)
    # the bank shows a second debit for it: not paid twice, left open and saying so
    again = reconcile(engine, statement(tmp_path, "s2.xml", ntry(8, 4_000, "DBIT", ref=f"RFD{r.refund_id}",
                                                                 booked="2026-11-25"))).items[0]
    assert (again["kind"], again["status"]) == ("refund", "open") and "not paid twice" in again["detail"]
    assert len(entries(engine, "refund_payout")) == 1


def test_statement_debits_that_do_not_check_out_stay_open(refundable, tmp_path):
    engine = refundable.engine
    r = refund(engine, 2_000)
    items = reconcile(engine, statement(tmp_path, "s.xml", ntry(8, 2_500, "DBIT", ref=f"RFD{r.refund_id}"),
                                        ntry(8, 2_000, "DBIT", ref="RFD99999"),
                                        ntry(8, 2_000, "DBIT", ref="RF18539007547034"))).items
    assert [(i["kind"], i["status"]) for i in items] == [("refund", "open"), ("refund", "open"), ("debit", "open")]
    assert "is 2000 fen, the debit 2500" in items[0]["detail"] and "no refund 99999" in items[1]["detail"]
    assert not entries(engine, "refund_payout")
    assert payout(engine, r.refund_id).paid_out_by == "operator:cai"
    assert_ledger_verifies(engine)


@pytest.fixture
def moved(refundable, tmp_path):
    """A remittance matched, a refund paid out by the operator and matched to its statement debit,
    and a second refund paid but not paid out; the ledger verifies."""
    engine = refundable.engine
    out, kept = refund(engine, 3_000), refund(engine, 1_000)
    payout(engine, out.refund_id)
    items = reconcile(engine, statement(tmp_path, "s.xml", ntry(8, REMIT, ref=REF),
                                        ntry(8, 3_000, "DBIT", ref=f"RFD{out.refund_id}"))).items
    assert [i["status"] for i in items] == ["matched", "matched"]
    refundable.items, refundable.refunds = {i["kind"]: i["item_id"] for i in items}, (out.refund_id, kept.refund_id)
    with engine.connect() as conn:
        refundable.finance_run_id = conn.execute(select(recon_runs.c.run_id).where(recon_runs.c.kind == "finance")).scalar_one()
    return refundable


def behind_the_ledger(engine, *changes) -> str:
    """Apply ``changes`` (statements, or (kind, ref_type, ref_id, lines) journal entries) without
    the ledger, and return verify's failures."""
    from ledger.verify import verify

    with engine.begin() as conn:
        for change in changes:
            if not isinstance(change, tuple):
                conn.execute(change)
                continue
            kind, ref_type, ref_id, lines = change
            entry_id = conn.execute(insert(journal_entries).returning(journal_entries.c.entry_id).values(
                business_date=DAY, kind=kind, ref_type=ref_type, ref_id=str(ref_id), actor="test", created_at=T0)
            ).scalar_one()
            conn.execute(insert(journal_lines), [{"entry_id": entry_id, "business_date": DAY, "account": a,
                                                  "amount": fen, "customer_no": None} for a, fen in lines])
    return "\n".join(verify(engine))


CORRUPTIONS = {
    "clearing": (lambda w: [("x", "x", 1, [(bank_clearing(BANK), -700), ("revenue", 700)])],
                 [f"bank_clearing:{BANK} is {COLLECTED + 50_000 - REMIT - 700}, but the bank's payments less "
                  f"reversals and remittances are {COLLECTED + 50_000 - REMIT}"]),
    "remittance_without_item": (lambda w: [("remittance", "recon_item", 999_999,
                                            [(COLLECTION, 700), (bank_clearing(BANK), -700)])],
                                ["statement item 999999: reconciliation attributes 0 fen to bank 01020000's remittance, "
                                 "but its journal entries move 700", "collection account is", f"bank_clearing:{BANK} is"]),
    "item_unlike_its_entry": (lambda w: [update(recon_items).where(recon_items.c.item_id == w.items["remittance"])
                                         .values(bank_amount=REMIT + 1)],
                              [f"statement item {{remittance}}: reconciliation attributes {REMIT + 1} fen to bank "
                               f"01020000's remittance, but its journal entries move {REMIT}"]),
    "run_remitted_twice": (lambda w: [insert(recon_items).values(
                               item_id=999_998, run_id=w.finance_run_id, kind="remittance", status="open", bank_code=BANK,
                               business_date=DAY, bank_amount=700, direction="C", reversal="N", remits_run_id=w.run_id,
                               created_at=T0),
                           ("remittance", "recon_item", 999_998, [(COLLECTION, 700), (bank_clearing(BANK), -700)])],
                           [f"bank run {{run}}: its remittances took {REMIT + 700} fen of it, more than the {REMIT} "
                            f"it expects"]),
    "refunds_payable": (lambda w: [("x", "x", 1, [(REFUNDS_PAYABLE, 100), ("revenue", -100)])],
                        ["refunds_payable is 900 (credit), but refunds paid 4000 - paid out 3000 = 1000"]),
    "collection": (lambda w: [("x", "x", 1, [(COLLECTION, 100), ("revenue", -100)])],
                   [f"collection account is {REMIT - 3_000 + 100}, but remitted {REMIT} - refunds paid out 3000"]),
    "paid_out_without_entry": (lambda w: [update(refunds).where(refunds.c.id == w.refunds[1]).values(paid_out_at=T0)],
                               ["refund {kept} of 1000 is paid out, but has 0 payout entr(ies) of 0",
                                "refunds_payable is 1000 (credit), but refunds paid 4000 - paid out 4000 = 0"]),
    "payout_entry_not_paid_out": (lambda w: [("refund_payout", "refund", w.refunds[1],
                                              [(REFUNDS_PAYABLE, 1_000), (COLLECTION, -1_000)])],
                                  ["refund {kept} is not paid out but has 1 payout entr(ies)"]),
    "statement_debit_unlike_its_refund": (lambda w: [update(recon_items).where(recon_items.c.item_id == w.items["refund"])
                                                     .values(bank_amount=3_100)],
                                          ["statement item {refund} is matched to refund {out} of 3000, but is a D of 3100"]),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_verify_finds_each_broken_money_out_invariant(moved, corruption):
    changes, expected = CORRUPTIONS[corruption]
    names = {"out": moved.refunds[0], "kept": moved.refunds[1], "run": moved.run_id, **moved.items}
    found = behind_the_ledger(moved.engine, *changes(moved))
    for text in expected:
        assert text.format(**names) in found, found


def test_gridpay_ledger_payout(refundable):
    from identity_helpers import operator_env
    from test_recon_support import gridpay

    engine, r = refundable.engine, refund(refundable.engine, 2_000)
    finance = operator_env(engine, "fin", ["finance"])
    out = gridpay("ledger", "payout", r.refund_id, "--reference", "TX-9", "--url", refundable.url, env=finance)
    assert out.returncode == 0 and "paid out (TX-9)" in out.stdout, out.stdout + out.stderr
    assert balances(engine)[COLLECTION] == -2_000
    again = gridpay("ledger", "payout", r.refund_id, "--reference", "TX-9", "--url", refundable.url, env=finance)
    assert again.returncode == 1 and "paid out already" in again.stdout + again.stderr
    assert len(entries(engine, "refund_payout")) == 1
    assert_ledger_verifies(engine)


def test_the_commands_from_bank_file_and_statement_to_a_ledger_that_verifies(db_url, tmp_path):
    """``gridpay recon bank``, ``gridpay recon finance`` and ``gridpay ledger verify``, as an operator runs them."""
    from identity_helpers import operator_env
    from test_recon_support import gridpay

    w = build_world(db_url)
    fin = operator_env(w.engine, "fin", ["finance"])
    gridpay("recon", "bank", write_bank_file(tmp_path, w.lines), "--url", w.url, check=True,
            env=operator_env(w.engine, "alice", ["clerk"]))
    gridpay("recon", "finance", statement(tmp_path, "s.xml", ntry(8, REMIT, ref=REF)), "--url", w.url, check=True, env=fin)
    assert balances(w.engine)[COLLECTION] == REMIT and balances(w.engine)[bank_clearing(BANK)] == COLLECTED - REMIT
    out = gridpay("ledger", "verify", "--url", w.url)
    assert out.returncode == 0 and "ledger verifies: OK" in out.stdout, out.stdout
    w.engine.dispose()

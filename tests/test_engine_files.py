"""Batch debit files (docs/spec/INTERFACE.md §7.2): the request is written once, a good result applies whole, a bad one
(missing, extra or changed lines, wrong totals) is rejected whole, the deadline leaves lines open."""
from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import func, select

from config.settings import environment_for
from engines.files import apply_result_file, expire_files, run_file_work, write_request_file
from engines.plans import build_batch
from gridpay.cli import gridpay
from config.clock import Clock
from ledger.recon.matching import reconcile_bank_file
from ledger.schema import allocations, debit_batches, debits, outbox, payments
from ledger_helpers import T0, assert_ledger_verifies
from identity_helpers import operator_env
from test_engine_support import FILE_BANK, make_settings, seed, settings_tree, states
from test_recon_support import write_bank_file

CAL = Clock()


def file_batch(engine, at=T0):
    with engine.begin() as conn:
        return build_batch(conn, bank_code=FILE_BANK, at=at, clock=CAL, mode="file")


def result_for(request: bytes, codes: dict[int, str], *, header=None, drop=(), extra=None, change=None,
               refs: dict[int, str] | None = None) -> bytes:
    lines = request.decode("gbk").strip("\n").split("\n")
    h = lines[0].split("|")
    out, ok, bad = [], [0, 0], [0, 0]
    for line in lines[1:]:
        _, seq, cust, account, amount, _periods = line.split("|")
        seq = int(seq)
        if seq in drop:
            continue
        if change and change[0] == seq:
            amount = str(change[1])
        code = codes.get(seq, "00")
        out.append(f"D|{seq}|{cust}|{account}|{amount}|{code}|{(refs or {}).get(seq, f'REF{seq:06d}')}")
        bucket = ok if code == "00" else bad
        bucket[0] += 1
        bucket[1] += int(amount)
    if extra:
        out.append(extra)
    total = ok[1] + bad[1]
    head = header or f"H|{h[1]}|{h[2]}|{len(out)}|{total}|{ok[0]}|{ok[1]}|{bad[0]}|{bad[1]}"
    return ("\n".join([head] + out) + "\n").encode("gbk")


def test_file_debits_round_trip(db_url, tmp_path):
    engine, numbers = seed(db_url, 5, bank=FILE_BANK)
    drop = tmp_path / "drop"
    settings = make_settings(db_url, drop_dir=str(drop))
    s = file_batch(engine)
    assert s.debits == 5 and s.chunks == 0
    work = run_file_work(engine, settings, T0, owner="t", banks=[FILE_BANK], clock=CAL)
    req_path = drop / "outgoing" / f"{FILE_BANK}_{s.batch_id}.req"
    assert work["written"] == [req_path]
    request = req_path.read_bytes()
    lines = request.decode("gbk").strip().split("\n")
    assert lines[0] == f"H|{FILE_BANK}|{s.batch_id}|5|{5 * 10_050}"
    assert lines[1] == f"D|1|{numbers[0]}|A{numbers[0]}|10050|202601"
    assert states(engine) == {"sent": 5}
    # never twice: the request is gone from outgoing (picked up) and another pass writes nothing
    req_path.unlink()
    assert run_file_work(engine, settings, T0 + timedelta(minutes=1), owner="t", banks=[FILE_BANK],
                         clock=CAL)["written"] == []
    assert write_request_file(engine, settings, s.batch_id, now=T0) is None
    assert not list((drop / "outgoing").iterdir())

    ret = tmp_path / f"{FILE_BANK}_{s.batch_id}.ret"
    bad_files = {
        "missing line": result_for(request, {}, drop=(3,)),
        "extra line": result_for(request, {}, extra=f"D|9|{numbers[0]}|A{numbers[0]}|10050|00|X"),
        "changed amount": result_for(request, {}, change=(2, 10_000)),
        "totals disagree": result_for(request, {}, header=f"H|{FILE_BANK}|{s.batch_id}|5|50250|5|50250|0|1"),
    }
    for why, data in bad_files.items():
        ret.write_bytes(data)
        out = apply_result_file(engine, ret, "test", now=T0 + timedelta(hours=2))
        assert not out.ok and out.errors, why
        assert states(engine) == {"sent": 5}, why            # nothing applied
    ret.write_bytes(result_for(request, {4: "51", 5: "14"}))
    env = operator_env(engine, "wang", ["operations"], environment_for(settings_tree(db_url, drop_dir=str(drop))))
    res = CliRunner().invoke(gridpay, ["debit", "result", str(ret)], env=env, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "3 approved (30150 fen), 2 declined" in res.output
    assert states(engine) == {"approved": 3, "declined": 2}
    with engine.connect() as conn:
        codes = dict(conn.execute(select(debits.c.customer_no, debits.c.response_code)).all())
        assert codes[numbers[3]] == "51" and codes[numbers[4]] == "14"
        paid = conn.execute(select(func.sum(allocations.c.amount))).scalar_one()
        assert paid == 3 * 10_050
        assert conn.execute(select(func.count()).select_from(outbox).where(outbox.c.kind.like("debit%"))).scalar_one() == 5
    # the same result again changes nothing
    again = apply_result_file(engine, ret, "test", now=T0 + timedelta(hours=3))
    assert not again.ok and "already has its result" in again.message
    assert_ledger_verifies(engine)
    engine.dispose()


def test_no_result_by_the_deadline_stays_open(sqlite_url, tmp_path):
    engine, numbers = seed(sqlite_url, 2, bank=FILE_BANK)
    settings = make_settings(sqlite_url, drop_dir=str(tmp_path / "drop"))
    s = file_batch(engine)
    run_file_work(engine, settings, T0, owner="t", banks=[FILE_BANK], clock=CAL)
    assert expire_files(engine, T0 + timedelta(hours=23), CAL) == []
    assert expire_files(engine, T0 + timedelta(hours=24, seconds=1), CAL) == [s.batch_id]
    assert states(engine) == {"unknown": 2}                   # unpaid, open for reconciliation
    # a valid result arriving late is the bank's word: still applied
    request = (tmp_path / "drop" / "outgoing" / f"{FILE_BANK}_{s.batch_id}.req").read_bytes()
    ret = tmp_path / f"{FILE_BANK}_{s.batch_id}.ret"
    ret.write_bytes(result_for(request, {2: "51"}))
    assert apply_result_file(engine, ret, "test", now=T0 + timedelta(hours=30)).ok
    assert states(engine) == {"approved": 1, "declined": 1}
    assert_ledger_verifies(engine)
    engine.dispose()


def test_crash_between_commit_and_rename_is_finished(sqlite_url, tmp_path):
    engine, _ = seed(sqlite_url, 2, bank=FILE_BANK)
    settings = make_settings(sqlite_url, drop_dir=str(tmp_path / "drop"))
    s = file_batch(engine)
    path = write_request_file(engine, settings, s.batch_id, now=T0)
    part = path.parent / f".{path.name}.part"
    path.replace(part)                                        # as if we died before the rename
    run_file_work(engine, settings, T0, owner="t", banks=[FILE_BANK], clock=CAL)
    assert path.exists() and not part.exists()
    engine.dispose()


def test_drop_watcher_hands_result_files_to_the_engine(sqlite_url, tmp_path):
    from ledger.recon.watch import DropWatcher

    engine, _ = seed(sqlite_url, 2, bank=FILE_BANK)
    drop = tmp_path / "drop"
    settings = make_settings(sqlite_url, drop_dir=str(drop))
    s = file_batch(engine)
    run_file_work(engine, settings, T0, owner="t", banks=[FILE_BANK], clock=CAL)
    request = (drop / "outgoing" / f"{FILE_BANK}_{s.batch_id}.req").read_bytes()
    (drop / "incoming").mkdir(parents=True, exist_ok=True)
    (drop / "incoming" / f"{FILE_BANK}_{s.batch_id}.ret").write_bytes(result_for(request, {}))
    results = DropWatcher(engine, drop).poll_once()
    assert [r.outcome for r in results] == ["processed"], [(r.outcome, r.message, r.errors) for r in results]
    assert states(engine) == {"approved": 2}
    engine.dispose()


def day_lines(engine, refs: dict[str, str], status: str = "S") -> list[str]:
    """The bank's §7.1 D lines for file debits: {customer: bank reference (the RRN column)}."""
    with engine.connect() as conn:
        amounts = dict(conn.execute(select(debits.c.customer_no, debits.c.amount)).all())
    return [f"D|D|20261123150000|{i:06d}|{ref}|{cust}|{int(amounts[cust])}|{status}|{ref[:6]}"
            for i, (cust, ref) in enumerate(sorted(refs.items()), start=1)]


def test_file_debits_are_matched_by_the_result_files_bank_reference(db_url, tmp_path):
    """§7.1: the bank's day file carries a file debit's result-file bank reference as its RRN;
    the ledger books the debit (and its payment) under that reference, so reconciliation
    matches it."""
    engine, numbers = seed(db_url, 3, bank=FILE_BANK)
    settings = make_settings(db_url, drop_dir=str(tmp_path / "drop"))
    s = file_batch(engine)
    run_file_work(engine, settings, T0, owner="t", banks=[FILE_BANK], clock=CAL)
    with engine.connect() as conn:
        assert set(conn.execute(select(debits.c.rrn)).scalars()) == {None}     # no RRN before the bank's word
    request = (tmp_path / "drop" / "outgoing" / f"{FILE_BANK}_{s.batch_id}.req").read_bytes()
    ret = tmp_path / f"{FILE_BANK}_{s.batch_id}.ret"
    refs = {1: "BK7731000001", 2: "BK7731000002", 3: "BK7731000003"}
    ret.write_bytes(result_for(request, {3: "51"}, refs=refs))
    assert apply_result_file(engine, ret, "test", now=T0 + timedelta(hours=2), clock=CAL).ok
    with engine.connect() as conn:
        rrn_of = dict(conn.execute(select(debits.c.customer_no, debits.c.rrn)).all())
        paid = dict(conn.execute(select(payments.c.customer_no, payments.c.rrn)).all())
    assert rrn_of == {numbers[0]: refs[1], numbers[1]: refs[2], numbers[2]: refs[3]}
    assert paid == {numbers[0]: refs[1], numbers[1]: refs[2]}
    bank_file = write_bank_file(tmp_path, day_lines(engine, {numbers[0]: refs[1], numbers[1]: refs[2]}),
                                bank=FILE_BANK, day=CAL.business_date(T0))
    run = reconcile_bank_file(engine, bank_file, actor="test", now=T0 + timedelta(days=1), clock=CAL)
    assert run.status == "applied" and not run.items, [(i["kind"], i["rrn"], i["detail"]) for i in run.items]
    assert (run.totals["matched_count"], run.totals["matched_sum"]) == (2, 2 * 10_050)
    assert_ledger_verifies(engine)
    engine.dispose()


def test_batch_numbers_have_no_six_digit_limit(db_url, tmp_path):
    """The batch number of a request file is the batch id, however long (the RRN no longer
    carries it)."""
    engine, numbers = seed(db_url, 2, bank=FILE_BANK)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("select setval(pg_get_serial_sequence('debit_batches', 'batch_id'), 12345677)")
        else:
            conn.execute(debit_batches.insert(), {"batch_id": 12345677, "bank_code": FILE_BANK, "mode": "file",
                                                  "created_at": T0})
    s = file_batch(engine)
    assert s.batch_id == 12345678
    settings = make_settings(db_url, drop_dir=str(tmp_path / "drop"))
    (path,) = run_file_work(engine, settings, T0, owner="t", banks=[FILE_BANK], clock=CAL)["written"]
    assert path.name == f"{FILE_BANK}_12345678.req"
    request = path.read_bytes()
    assert request.decode("gbk").split("\n")[0] == f"H|{FILE_BANK}|12345678|2|{2 * 10_050}"
    ret = tmp_path / f"{FILE_BANK}_12345678.ret"
    ret.write_bytes(result_for(request, {}))
    assert apply_result_file(engine, ret, "test", now=T0 + timedelta(hours=2), clock=CAL).ok
    assert states(engine) == {"approved": 2}
    assert_ledger_verifies(engine)
    engine.dispose()


def test_an_approved_line_needs_a_bank_reference_that_can_be_an_rrn(sqlite_url, tmp_path):
    """An approved line's bank reference becomes the debit's RRN (§7.1, field 37 an 12): one
    that cannot be, or that two approved lines share, rejects the file whole."""
    engine, numbers = seed(sqlite_url, 3, bank=FILE_BANK)
    settings = make_settings(sqlite_url, drop_dir=str(tmp_path / "drop"))
    s = file_batch(engine)
    run_file_work(engine, settings, T0, owner="t", banks=[FILE_BANK], clock=CAL)
    request = (tmp_path / "drop" / "outgoing" / f"{FILE_BANK}_{s.batch_id}.req").read_bytes()
    ret = tmp_path / f"{FILE_BANK}_{s.batch_id}.ret"
    for refs, problem in [({1: "BK-7731-000001"}, (2, "bank_reference")),        # not letters and digits
                          ({1: "BK77310000011"}, (2, "bank_reference")),         # 13 characters
                          ({1: ""}, (2, "bank_reference")),                      # none
                          ({1: "SAME", 2: "SAME"}, (3, "bank_reference"))]:      # one RRN, two debits
        ret.write_bytes(result_for(request, {}, refs=refs))
        out = apply_result_file(engine, ret, "test", now=T0 + timedelta(hours=2), clock=CAL)
        assert not out.ok and problem in [e[:2] for e in out.errors], (refs, out.errors)
        assert states(engine) == {"sent": 3}
    ret.write_bytes(result_for(request, {3: "51"}, refs={3: ""}))   # a declined line's reference is not an RRN
    assert apply_result_file(engine, ret, "test", now=T0 + timedelta(hours=2), clock=CAL).ok
    assert states(engine) == {"approved": 2, "declined": 1}
    engine.dispose()


def test_an_expired_file_debit_is_found_in_the_bank_file_by_customer_and_amount(db_url, tmp_path):
    """No result file by the deadline: the debits are unknown and have no RRN. The bank's day
    file lists one of them under a reference the ledger never heard of; reconciliation finds it
    by customer and amount (its only line), and settling gives each debit what the bank says."""
    engine, numbers = seed(db_url, 2, bank=FILE_BANK)
    settings = make_settings(db_url, drop_dir=str(tmp_path / "drop"))
    file_batch(engine)
    run_file_work(engine, settings, T0, owner="t", banks=[FILE_BANK], clock=CAL)
    assert expire_files(engine, T0 + timedelta(hours=25), CAL)
    assert states(engine) == {"unknown": 2}
    bank_file = write_bank_file(tmp_path, day_lines(engine, {numbers[0]: "BK7731000001"}), bank=FILE_BANK,
                                day=CAL.business_date(T0))
    run = reconcile_bank_file(engine, bank_file, actor="test", now=T0 + timedelta(days=2), clock=CAL,
                              settle_debits=True)
    assert run.status == "applied"
    found = {i["customer_no"]: (i["kind"], i["rrn"], i["bank_status"]) for i in run.items}
    assert found == {numbers[0]: ("debit_unknown", "BK7731000001", "S"), numbers[1]: ("debit_unknown", None, None)}
    assert states(engine) == {"approved": 1, "declined": 1}
    with engine.connect() as conn:
        assert conn.execute(select(payments.c.customer_no)).scalars().all() == [numbers[0]]
    assert_ledger_verifies(engine)
    engine.dispose()

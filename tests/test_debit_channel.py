"""The channel of a debit: recorded by build_batch (batch) and create_single (the single debit's),
refused when not one of the allowed values (by create_single and by the table's check), audited,
and counted by `gridpay report debits` by bank, channel and state, on SQLite and PostgreSQL."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from config.clock import Clock
from engines.plans import build_batch
from engines.realtime import SingleRefused, create_single
from ledger.finance_reports import debits_report
from ledger.schema import audit_log, debits
from ledger_helpers import T0
from test_engine_support import BANK, make_settings, seed


def test_channels_recorded_refused_and_counted(db_url):
    engine, (c1, c2, c3, c4) = seed(db_url, 4)
    settings = make_settings(db_url)
    with engine.begin() as conn:
        build_batch(conn, bank_code=BANK, at=T0, clock=Clock(), customers_only=[c1])
    voice = create_single(engine, settings, c2, bank_code=None, now=T0, actor="client:voice", channel="voice")
    create_single(engine, settings, c3, bank_code=None, now=T0, actor="operator:op", channel="counter")
    with pytest.raises(SingleRefused) as refused:
        create_single(engine, settings, c4, bank_code=None, now=T0, actor="operator:op", channel="fax")
    assert refused.value.reason == "bad-channel"
    with pytest.raises(SingleRefused) as refused:
        create_single(engine, settings, c2, bank_code=None, now=T0, actor="operator:op", channel="voice")
    assert refused.value.reason == "debit-in-flight"
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(update(debits).where(debits.c.debit_id == voice.debit_id).values(channel="fax"))
    with engine.begin() as conn:
        conn.execute(update(debits).where(debits.c.debit_id == voice.debit_id).values(state="approved"))
        details = [json.loads(d) for d in conn.execute(select(audit_log.c.details)
                                                       .where(audit_log.c.action == "debit.create")).scalars()]
    assert sorted(d["channel"] for d in details) == ["batch", "counter", "voice"]

    day = Clock().business_date(T0)
    counted = debits_report(engine, day, Clock()).rows
    assert {k: v[0] for k, v in counted.items()} == {(BANK, "batch", "pending"): 1, (BANK, "voice", "approved"): 1,
                                                     (BANK, "counter", "pending"): 1}
    assert debits_report(engine, day + timedelta(days=1), Clock()).rows == {}
    out = subprocess.run([sys.executable, "-m", "gridpay", "report", "debits", "--date", day.isoformat(),
                          "--url", db_url, "--format", "csv", "--lang", "en"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    rows = list(csv.reader(io.StringIO(out.stdout.lstrip("\ufeff"))))     # the report definition's sheet
    assert rows[0] == ["Direct debits by channel"]
    assert rows[5][2:] == ["channel", "state", "debits", "amount (yuan)", "amount (fen)"]
    assert [f'="{BANK}"', "voice system", "approved", "1", f"{voice.amount // 100}.{voice.amount % 100:02d}",
            str(voice.amount)] in [[r[0], *r[2:]] for r in rows if r]
    assert rows[-1][1:5] == ["total", "", "", "3"]
    engine.dispose()

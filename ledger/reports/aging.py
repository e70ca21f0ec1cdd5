"""Receivables aging and the arrears list, as of a business date.

A bill is open as of date D when it existed by the end of D (``clock.end_of(D)``), no reversing
bill had cancelled it by then, and what was allocated to it by then (allocations net of reversals
and corrections) leaves something owing. Days past due = D − due date; a bill is overdue from
the day after its due date. Buckets: not yet due, 0-30 (1 to 30 days past due), 31-60, 61-90, >90.
Amounts are what the bills still owe (a customer's prepaid balance is not netted: it pays bills
only as the posting rules apply it).
"""
from __future__ import annotations

import itertools
from datetime import date, timedelta

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.orm import aliased

from ledger.reports.context import COLLECTION_TYPES, CUSTOMER_TYPES, TOTAL, YES_NO, ReportContext, label_of
from ledger.reports.definition import Chart, Label, ReportDoc, Section, col
from ledger.schema import agreements, allocations, bills, customers

B, C, A = bills.c, customers.c, allocations.c
BUCKETS = (("not_due", "未到期", "not yet due"), ("d0_30", "0-30天", "0-30 days"), ("d31_60", "31-60天", "31-60 days"),
           ("d61_90", "61-90天", "61-90 days"), ("d90", ">90天", ">90 days"))


def open_bills(ctx: ReportContext, as_of: date):
    """SQL: the bills open as of ``as_of`` (module doc): bill_id, customer_no, due_date, owing."""
    cutoff = ctx.clock.end_of(as_of)
    paid = (select(A.bill_id, func.sum(A.amount).label("paid")).where(A.created_at < cutoff)
            .group_by(A.bill_id).subquery())
    red = aliased(bills)
    owing = B.principal + B.penalty - func.coalesce(paid.c.paid, 0)
    # only a reversing bill (kind R) names the bill it cancels: saying so lets PostgreSQL's anti-join
    # hash the few reversing bills instead of every bill
    cancelled = exists(select(red.c.bill_id).where(red.c.kind == "R", red.c.reverses_bill_id == B.bill_id,
                                                   red.c.created_at < cutoff))
    return (select(B.bill_id, B.customer_no, B.due_date, owing.label("owing"))
            .select_from(bills.outerjoin(paid, paid.c.bill_id == B.bill_id))
            .where(B.kind != "R", B.created_at < cutoff, owing > 0, ~cancelled)
            .subquery())


def _bucket_sums(bill, as_of: date) -> list:
    day = lambda n: as_of - timedelta(days=n)   # noqa: E731 - the bucket bounds read as dates
    due = bill.c.due_date
    bounds = [due >= as_of, and_(due < as_of, due >= day(30)), and_(due < day(30), due >= day(60)),
              and_(due < day(60), due >= day(90)), due < day(90)]
    return [func.sum(case((cond, bill.c.owing), else_=0)).label(key) for cond, (key, _, _) in zip(bounds, BUCKETS)]


def aging_report(ctx: ReportContext, as_of: date) -> ReportDoc:
    bill = open_bills(ctx, as_of)
    keys = (C.district, C.customer_type)
    query = (select(*keys, func.count(), *_bucket_sums(bill, as_of), func.sum(bill.c.owing))
             .select_from(bill.join(customers, C.customer_no == bill.c.customer_no))
             .group_by(*keys).order_by(*keys))
    money_keys = [k for k, _, _ in BUCKETS] + ["owing"]
    rows, totals = [], dict.fromkeys(["bills", *money_keys], 0)
    with ctx.engine.connect() as conn:
        for district, ctype, count, *sums in conn.execute(query):
            row = {"district": district or "", "customer_type": label_of(CUSTOMER_TYPES, ctype), "bills": int(count),
                   **{k: int(v or 0) for k, v in zip(money_keys, sums)}}
            rows.append(row)
            for k in totals:
                totals[k] += row[k]
    totals["customer_type"] = TOTAL
    columns = [col("district", "供电所/区域", "district", "identifier"), col("customer_type", "客户类型", "customer type"),
               col("bills", "未缴账单数", "open bills", "count"),
               *[col(k, zh, en, "money") for k, zh, en in BUCKETS], col("owing", "欠费合计", "owing", "money")]
    chart = Chart(Label("欠费账龄分布", "Owing by age"), [Label("金额", "amount")],
                  [(Label(zh, en), [totals[k]]) for k, zh, en in BUCKETS])
    return ReportDoc("aging", Label("应收账款账龄分析", "Receivables aging"), [(Label("截至", "as of"), as_of.isoformat())],
                     [Section("aging", Label("按区域与客户类型", "By district and customer type"), columns, rows, totals)],
                     ctx.clock.local(), chart,
                     [Label("逾期天数 = 截至日 − 应缴日；未到期含应缴日当天。", "Days past due = as-of date − due date; "
                            "a bill due on the as-of date is not yet due.")])


def arrears_query(ctx: ReportContext, as_of: date, district: str | None, min_days: int):
    """SQL: per customer with overdue bills (at least ``min_days`` past due), its bills, owing and
    oldest due date, with what follow-up needs (collection type, whether it has a mobile)."""
    bill = open_bills(ctx, as_of)
    overdue = (select(bill.c.customer_no, func.count().label("bills"), func.sum(bill.c.owing).label("owing"),
                      func.min(bill.c.due_date).label("oldest_due"))
               .where(bill.c.due_date <= as_of - timedelta(days=max(1, min_days))).group_by(bill.c.customer_no)
               .subquery())
    agreed = exists(select(agreements.c.id).where(agreements.c.customer_no == C.customer_no, agreements.c.status == "A"))
    collection = func.coalesce(C.collection_type, case((agreed, "D"), else_="C"))
    query = (select(C.customer_no, C.customer_name, C.district, C.customer_type, overdue.c.bills, overdue.c.owing,
                    overdue.c.oldest_due, collection.label("collection_type"), C.mobile.is_not(None).label("mobile"))
             .select_from(overdue.join(customers, C.customer_no == overdue.c.customer_no)))
    if district is not None:
        query = query.where(C.district == district)
    return query


def arrears_list(ctx: ReportContext, as_of: date, district: str | None = None, min_days: int = 1) -> ReportDoc:
    query = arrears_query(ctx, as_of, district, min_days)
    listed = query.selected_columns
    # the list's totals as window sums over the whole list: one pass reads both, not an aggregate
    # query of its own (the section's title, written before the rows, needs the count)
    query = query.add_columns(func.count().over().label("listed"), func.sum(listed.bills).over().label("listed_bills"),
                              func.sum(listed.owing).over().label("listed_owing"))
    rows = _stream(ctx, query.order_by(C.district, listed.oldest_due, C.customer_no), as_of)
    customers_, bills_, owing = next(rows)
    totals = {"customer_no": None, "customer_name": TOTAL, "bills": bills_, "owing": owing, "customers": customers_}
    columns = [col("customer_no", "户号", "customer number", "identifier"), col("customer_name", "户名", "customer name"),
               col("district", "供电所/区域", "district", "identifier"), col("customer_type", "客户类型", "customer type"),
               col("bills", "逾期账单数", "overdue bills", "count"), col("owing", "欠费金额", "amount overdue", "money"),
               col("days", "最长逾期天数", "days overdue", "count"),
               col("collection_type", "缴费方式", "collection type"), col("mobile", "有手机号", "mobile")]
    parameters = [(Label("截至", "as of"), as_of.isoformat()), (Label("最少逾期天数", "at least days overdue"), str(min_days))]
    if district is not None:
        parameters.append((Label("区域", "district"), district))
    return ReportDoc("arrears", Label("欠费清单", "Arrears list"), parameters,
                     [Section("arrears", Label(f"欠费客户（{int(customers_):,} 户）", f"Customers in arrears ({int(customers_):,})"),
                              columns, rows, totals)], ctx.clock.local())


def _stream(ctx: ReportContext, query, as_of: date):
    """First the list's totals (customers, bills, owing: from the first row's window sums; zeros for
    an empty list), then the list's rows, read from a server-side cursor as they are written out."""
    with ctx.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=2_000).execute(query)
        first = result.fetchone()
        yield (0, 0, 0) if first is None else (int(first.listed), int(first.listed_bills), int(first.listed_owing))
        if first is None:
            return
        for r in itertools.chain([first], result):
            yield {"customer_no": r.customer_no, "customer_name": r.customer_name, "district": r.district or "",
                   "customer_type": label_of(CUSTOMER_TYPES, r.customer_type), "bills": int(r.bills),
                   "owing": int(r.owing), "days": (as_of - r.oldest_due).days,
                   "collection_type": label_of(COLLECTION_TYPES, r.collection_type), "mobile": YES_NO[bool(r.mobile)]}

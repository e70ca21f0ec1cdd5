"""Collections: 实收 (what the second reconciliation confirmed), and the daily and monthly reports.

**Confirmed (实收).** A payment (not reversed) is confirmed when finance's statement has vouched for
its money:
- its bank's reconciliation run of its business date (first reconciliation) is matched, by a match
  not undone, to a remittance on finance's statement (second reconciliation: the run is a
  ``recon_match_members`` row with ``run_id``), and the payment is no exception of that run that
  the remittance left out: an item of the run naming the payment counts only once it is matched
  or resolved with the bank's status S (what ``expected_remittance`` adds to the run's sum); or
- it is matched one by one to a statement entry (a cheque credit: a member with ``payment_id``).
Everything else collected is "not yet confirmed".
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import and_, case, exists, func, not_, select

from ledger.finance_reports import collection_rows
from ledger.recon_tables import recon_items, recon_match_members, recon_matches, recon_runs
from ledger.reports.cells import ratio
from ledger.reports.context import CHANNELS, METHODS, SIGN_OFF, TOTAL, ReportContext, label_of
from ledger.reports.definition import Chart, Label, ReportDoc, Section, col
from ledger.schema import payments, reversals

P, R = payments.c, reversals.c
BANK_COLUMNS = [col("bank_code", "银行代码", "bank code", "identifier"), col("bank_name", "银行", "bank"),
                col("channel", "渠道", "channel"), col("method", "方式", "method")]


def remitted_runs(conn, first: date, last: date) -> set[tuple[str, date]]:
    """(bank, business date) of the bank runs of first..last matched to a remittance (a handful:
    one per bank and day)."""
    rr, mm, m = recon_runs.c, recon_match_members.c, recon_matches.c
    return {(bank, day) for bank, day in conn.execute(select(rr.bank_code, rr.business_date).select_from(
        recon_runs.join(recon_match_members, mm.run_id == rr.run_id).join(recon_matches, m.match_id == mm.match_id))
        .where(rr.kind == "bank", rr.business_date.between(first, last), m.undone_at.is_(None)).distinct())}


def payment_flags():
    """SQL, per row of ``payments``: (left out: an exception of its bank run that the remittance did
    not cover; one by one: matched to a statement entry itself), each 1 or 0, by index look-ups."""
    rr, mm, m, ri = recon_runs.c, recon_match_members.c, recon_matches.c, recon_items.c
    left_out = (select(ri.item_id).select_from(recon_items.join(recon_runs, rr.run_id == ri.run_id))
                .where(ri.payment_id == P.payment_id, rr.kind == "bank",
                       not_(and_(ri.status.in_(("matched", "resolved")), func.coalesce(ri.bank_status, "") == "S"))))
    one_by_one = (select(mm.id).select_from(recon_match_members.join(recon_matches, m.match_id == mm.match_id))
                  .where(mm.payment_id == P.payment_id, m.undone_at.is_(None)))
    return (case((exists(left_out), 1), else_=0).label("left_out"),
            case((exists(one_by_one), 1), else_=0).label("one_by_one"))


def confirmed_rows(engine, first: date, last: date) -> list[tuple]:
    """(business date, bank, channel, method, payments, collected, confirmed payments, confirmed)
    of the unreversed payments of first..last. SQL counts and sums them by those keys and the two
    flags of ``payment_flags``; whether the bank run was remitted is a property of the group
    (bank and date), applied to the grouped rows."""
    flagged = (select(P.business_date, P.bank_code, P.channel, P.method, P.amount, *payment_flags())
               .where(P.business_date.between(first, last),
                      ~exists(select(R.reversal_id).where(R.payment_id == P.payment_id))).subquery("flagged"))
    f = flagged.c
    keys = (f.business_date, f.bank_code, f.channel, f.method)
    query = select(*keys, f.left_out, f.one_by_one, func.count(), func.sum(f.amount)).group_by(*keys, f.left_out,
                                                                                              f.one_by_one)
    out: dict[tuple, list[int]] = {}
    with engine.connect() as conn:
        remitted = remitted_runs(conn, first, last)
        for bdate, bank, channel, method, left_out, one_by_one, count, total in conn.execute(query):
            row = out.setdefault((bdate, bank, channel, method), [0, 0, 0, 0])
            row[0] += int(count)
            row[1] += int(total)
            if one_by_one or ((bank, bdate) in remitted and not left_out):
                row[2] += int(count)
                row[3] += int(total)
    return [key + tuple(row) for key, row in sorted(out.items())]


def confirmed_report(ctx: ReportContext, first: date, last: date) -> ReportDoc:
    rows, per_bank = [], defaultdict(lambda: [0, 0])
    totals = dict.fromkeys(("payments", "collected", "confirmed_count", "confirmed", "open_count", "open"), 0)
    for bdate, bank, channel, method, count, collected, ok_count, ok_sum in confirmed_rows(ctx.engine, first, last):
        row = {"business_date": bdate, "bank_code": bank, "bank_name": ctx.bank_names.get(bank, ""),
               "channel": label_of(CHANNELS, channel), "method": label_of(METHODS, method), "payments": count,
               "collected": collected, "confirmed_count": ok_count, "confirmed": ok_sum,
               "open_count": count - ok_count, "open": collected - ok_sum, "share": ratio(ok_sum, collected)}
        rows.append(row)
        for key in totals:
            totals[key] += row[key]
        per_bank[bank][0] += ok_sum
        per_bank[bank][1] += collected - ok_sum
    totals.update(business_date=TOTAL, bank_code=None,
                  share=ratio(totals["confirmed"], totals["collected"]))
    columns = [col("business_date", "营业日", "business date", "date"), *BANK_COLUMNS,
               col("payments", "笔数", "payments", "count"), col("collected", "已收金额", "collected", "money"),
               col("confirmed_count", "实收笔数", "confirmed payments", "count"),
               col("confirmed", "实收金额", "confirmed", "money"),
               col("open_count", "未确认笔数", "unconfirmed payments", "count"),
               col("open", "未确认金额", "not yet confirmed", "money"),
               col("share", "确认比例", "confirmed share", "percent")]
    chart = Chart(Label("各银行实收与未确认金额", "Confirmed and not yet confirmed, by bank"),
                  [Label("实收", "confirmed"), Label("未确认", "not yet confirmed")],
                  [(ctx.bank(b), v) for b, v in sorted(per_bank.items())])
    return ReportDoc(
        "confirmed", Label("实收报表（经二次对账确认）", "Confirmed collections (second reconciliation)"),
        _period_parameters(first, last),
        [Section("confirmed", Label("按营业日、银行、渠道、方式", "By business date, bank, channel and method"),
                 columns, rows, totals)],
        ctx.clock.local(), chart,
        [Label("实收：银行汇款已与财务对账单核对一致的收款（未冲正）；未确认：已收但尚未经二次对账确认。",
               "Confirmed: unreversed payments whose bank remittance finance's statement matched; not yet "
               "confirmed: collected, not (yet) vouched for by the second reconciliation.")], SIGN_OFF)


def _period_parameters(first: date, last: date) -> list:
    if first == last:
        return [(Label("营业日", "business date"), first.isoformat())]
    return [(Label("营业日期间", "business dates"), f"{first.isoformat()} – {last.isoformat()}")]


COLLECTION_COLUMNS = [col("payments", "收款笔数", "payments", "count"), col("collected", "收款金额", "collected", "money"),
                      col("reversals", "冲正笔数", "reversals", "count"), col("reversed", "冲正金额", "reversed", "money"),
                      col("net", "净收款", "net", "money")]


def _by_bank_section(ctx: ReportContext, first: date, last: date) -> Section:
    rows, totals = [], dict.fromkeys(("payments", "collected", "reversals", "reversed", "net"), 0)
    for r in collection_rows(ctx.engine, first, last):
        row = {"bank_code": r.bank_code, "bank_name": ctx.bank_names.get(r.bank_code, ""),
               "channel": label_of(CHANNELS, r.channel), "method": label_of(METHODS, r.method),
               "payments": r.payments, "collected": r.collected, "reversals": r.reversals, "reversed": r.reversed,
               "net": r.net}
        rows.append(row)
        for key in totals:
            totals[key] += row[key]
    totals["bank_name"] = TOTAL
    return Section("by_bank", Label("按银行、渠道、方式", "By bank, channel and method"),
                   BANK_COLUMNS + COLLECTION_COLUMNS, rows, totals)


def _bank_chart(section: Section, ctx: ReportContext) -> Chart:
    per_bank = defaultdict(lambda: [0, 0])
    for row in section.rows:
        per_bank[row["bank_code"]][0] += row["collected"]
        per_bank[row["bank_code"]][1] += row["reversed"]
    return Chart(Label("各银行收款与冲正金额", "Collected and reversed, by bank"),
                 [Label("收款", "collected"), Label("冲正", "reversed")],
                 [(ctx.bank(b), v) for b, v in sorted(per_bank.items())])


NOTE = Label("冲正计入其发生的营业日（可晚于原收款）。", "A reversal counts on the business date it was made "
             "(which may be later than its payment's).")


def daily_collections(ctx: ReportContext, business_date: date) -> ReportDoc:
    """The daily collections report (``ledger.finance_reports.daily_report``'s figures) as a definition."""
    section = _by_bank_section(ctx, business_date, business_date)
    return ReportDoc("daily", Label("日收款报表", "Daily collections"), _period_parameters(business_date, business_date),
                     [section], ctx.clock.local(), _bank_chart(section, ctx), [NOTE], SIGN_OFF)


def day_rows(engine, first: date, last: date) -> list[dict]:
    """Per business date of first..last: payments and their sum, reversals made and their sum."""
    paid = (select(P.business_date, func.count(), func.sum(P.amount))
            .where(P.business_date.between(first, last)).group_by(P.business_date))
    undone = (select(R.business_date, func.count(), func.sum(R.amount))
              .where(R.business_date.between(first, last)).group_by(R.business_date))
    days: dict[date, dict] = {}
    with engine.connect() as conn:
        for d, count, total in conn.execute(paid):
            days.setdefault(d, dict.fromkeys(("reversals", "reversed"), 0)).update(payments=int(count), collected=int(total))
        for d, count, total in conn.execute(undone):
            days.setdefault(d, dict.fromkeys(("payments", "collected"), 0)).update(reversals=int(count), reversed=int(total))
    out = []
    for d in sorted(days):
        row = {"payments": 0, "collected": 0, **days[d], "business_date": d}
        row["net"] = row["collected"] - row["reversed"]
        out.append(row)
    return out


def monthly_collections(ctx: ReportContext, month: date) -> ReportDoc:
    """The month's collections: each business date's totals, then the month's by bank, channel and method."""
    first, last = month_bounds(month)
    days = day_rows(ctx.engine, first, last)
    day_totals = {k: sum(r[k] for r in days) for k in ("payments", "collected", "reversals", "reversed", "net")}
    day_totals["business_date"] = TOTAL
    by_bank = _by_bank_section(ctx, first, last)
    return ReportDoc(
        "monthly", Label("月收款报表", "Monthly collections"), [(Label("月份", "month"), f"{first:%Y-%m}")],
        [Section("by_day", Label("按营业日", "By business date"),
                 [col("business_date", "营业日", "business date", "date"), *COLLECTION_COLUMNS], days, day_totals),
         by_bank], ctx.clock.local(), _bank_chart(by_bank, ctx), [NOTE], SIGN_OFF)


def month_bounds(month: date) -> tuple[date, date]:
    """The first and last day of ``month``'s calendar month."""
    first = month.replace(day=1)
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, date.fromordinal(following.toordinal() - 1)

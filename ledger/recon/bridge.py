"""The bridge a clerk signs: from one side's total to the other's, each kind of difference with its sign.

Bank run (``bank_bridge``): the bank file's total (its S lines) plus, for every exception, the
ledger's side less the bank's side (``ledger − bank``: a payment missing at the bank is +, a line
missing in the ledger is −), by kind for the items still open and together for those resolved or
matched by hand, comes to the ledger's total at the run (its unreversed payments of the bank and
date). The sides are those at the run: a resolution changes an item's ledger status afterwards,
so a reversed item had S, a posted bank-only line had none, and a debit of unknown outcome was
in no payment. ``ledger_since`` carries on from the ledger at the run to the ledger now:
+ lines posted from the file (补账), + debits settled as approved, − payments reversed.

Finance run (``finance_bridge``): statement credits − debits = the statement's net; less what is
not a collection (unmatched credits, + unmatched debits, reversal pairs, entries accepted
without a match), plus the differences of matched entries against their ledger side (within
the tolerance) = collections confirmed by the ledger (matched entries at their ledger side; an
entry matched by hand counts at its own amount: its match was accepted within the tolerance).

Every figure is integer fen; ``check`` gives the unexplained remainder (0 when the identity holds),
which the reports show as a line of its own rather than hide.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

BANK_KINDS = ("bank_only", "ledger_only", "amount_differs", "status_differs", "debit_unknown")


@dataclass(frozen=True)
class BridgeLine:
    key: str                 # what the line is (a label key of report_labels)
    role: str                # start | step | subtotal | end
    count: int | None
    fen: int


def bank_side(item: dict) -> int:
    """The bank file's S amount of an item (0 for a line reversed at the bank or no line)."""
    return int(item["bank_amount"]) if item["bank_status"] == "S" and item["bank_amount"] is not None else 0


def ledger_side_at_run(item: dict) -> int:
    """The ledger's unreversed amount of an item when the run was made."""
    if item["kind"] in ("bank_only", "debit_unknown") or item["ledger_amount"] is None:
        return 0
    if item["resolution"] == "reversed" or item["ledger_status"] == "S":
        return int(item["ledger_amount"])
    return 0


def difference(item: dict) -> int:
    """ledger − bank for one exception of a bank run."""
    return ledger_side_at_run(item) - bank_side(item)


def check(lines: list[BridgeLine]) -> int:
    """end − (start + steps): 0 when the bridge adds up."""
    start = next(ln.fen for ln in lines if ln.role == "start")
    end = next(ln.fen for ln in lines if ln.role == "end")
    return end - start - sum(ln.fen for ln in lines if ln.role == "step")


def _closed(lines: list[BridgeLine], end: BridgeLine) -> list[BridgeLine]:
    gap = end.fen - lines[0].fen - sum(ln.fen for ln in lines if ln.role == "step")
    if gap:
        lines.append(BridgeLine("unexplained", "step", None, gap))
    return lines + [end]


def matched_s_count(run: dict) -> int:
    """Lines matched with status S on both sides (the run keeps matched reversals per channel)."""
    channels = json.loads(run["details"] or "{}").get("channels", {})
    return run["matched_count"] - sum(c.get("matched_reversed", 0) for c in channels.values())


def ledger_at_run(run: dict, items: list[dict]) -> BridgeLine:
    """The ledger's total at the run: its unreversed payments of the bank and date, counted and summed."""
    count = matched_s_count(run) + sum(1 for i in items if ledger_side_at_run(i))
    return BridgeLine("ledger_total", "end", count, int(run["ledger_sum"]))


def bank_bridge(run: dict, items: list[dict]) -> list[BridgeLine]:
    count = matched_s_count(run) + sum(1 for i in items if bank_side(i))
    lines = [BridgeLine("bank_total", "start", count, int(run["bank_sum"]))]
    open_ = [i for i in items if i["status"] == "open"]
    kinds = list(BANK_KINDS) + sorted({i["kind"] for i in open_} - set(BANK_KINDS))
    for kind in kinds:
        mine = [i for i in open_ if i["kind"] == kind]
        lines.append(BridgeLine(kind, "step", len(mine), sum(difference(i) for i in mine)))
    done = [i for i in items if i["status"] != "open"]
    lines.append(BridgeLine("resolved", "step", len(done), sum(difference(i) for i in done)))
    return _closed(lines, ledger_at_run(run, items))


def ledger_since(run: dict, items: list[dict], now_count: int, now_fen: int) -> list[BridgeLine]:
    """From the ledger at the run to the ledger now (``now_*``: its unreversed payments of the bank and date)."""
    posted = [i for i in items if i["resolution"] == "posted"]
    approved = [i for i in items if i["resolution"] == "settled" and i["ledger_status"] == "S"]
    reversed_ = [i for i in items if i["resolution"] == "reversed"]
    at_run = ledger_at_run(run, items)
    lines = [BridgeLine("ledger_total", "start", at_run.count, at_run.fen),
             BridgeLine("posted", "step", len(posted), sum(int(i["ledger_amount"] or 0) for i in posted)),
             BridgeLine("settled_approved", "step", len(approved), sum(int(i["ledger_amount"] or 0) for i in approved)),
             BridgeLine("reversed", "step", len(reversed_), -sum(int(i["ledger_amount"] or 0) for i in reversed_))]
    return _closed(lines, BridgeLine("ledger_now", "end", now_count, now_fen))


def signed(item: dict, column: str = "bank_amount") -> int:
    """A statement entry's amount with its sign: credits +, debits −."""
    value = int(item[column] or 0)
    return -value if item["direction"] == "D" else value


def collection_side(item: dict) -> int:
    """What a matched statement entry confirms as collected: its ledger side, or its own amount."""
    return signed(item, "ledger_amount") if item["ledger_amount"] is not None else signed(item)


def finance_bridge(items: list[dict]) -> list[BridgeLine]:
    credits = [i for i in items if i["direction"] == "C"]
    debits = [i for i in items if i["direction"] == "D"]
    open_c = [i for i in credits if i["status"] == "open"]
    open_d = [i for i in debits if i["status"] == "open"]
    pairs = [i for i in items if i["status"] == "matched" and i["kind"] == "reversal"]
    accepted = [i for i in items if i["status"] == "resolved"]
    matched = [i for i in items if i["status"] == "matched" and i["kind"] != "reversal"]
    net = sum(signed(i) for i in items)
    lines = [BridgeLine("statement_credits", "start", len(credits), sum(signed(i) for i in credits)),
             BridgeLine("statement_debits", "step", len(debits), sum(signed(i) for i in debits)),
             BridgeLine("statement_net", "subtotal", len(items), net),
             BridgeLine("open_credits", "step", len(open_c), -sum(signed(i) for i in open_c)),
             BridgeLine("open_debits", "step", len(open_d), -sum(signed(i) for i in open_d)),
             BridgeLine("reversal_pairs", "step", len(pairs), -sum(signed(i) for i in pairs)),
             BridgeLine("accepted", "step", len(accepted), -sum(signed(i) for i in accepted)),
             BridgeLine("tolerance", "step", sum(1 for i in matched if collection_side(i) != signed(i)),
                        sum(collection_side(i) - signed(i) for i in matched))]
    return _closed(lines, BridgeLine("collections", "end", len(matched), sum(collection_side(i) for i in matched)))


def collections_by_kind(items: list[dict]) -> dict[str, tuple[int, int]]:
    """Matched statement entries (reversal pairs aside) by kind: count and collected fen."""
    out: dict[str, tuple[int, int]] = {}
    for i in items:
        if i["status"] == "matched" and i["kind"] != "reversal":
            kind = i["kind"] if i["resolved_by"] is None else "by_hand"
            count, fen = out.get(kind, (0, 0))
            out[kind] = (count + 1, fen + collection_side(i))
    return out

"""Batch debit files (docs/spec/INTERFACE.md §7.2): check a result file against its request file.

``validate_debit_result(request, result)`` (bytes or text of ``{bank}_{batch}.req`` and
``{bank}_{batch}.ret``) returns every problem as ``(line, field, reason)`` (line of the result
file; 0 for the file as a whole). A result file must answer every line of its request exactly
once, with the request's customer, account and amount, and its header's totals (lines, sum,
approved lines and sum, declined lines and sum) must agree with its lines. An approved line's
bank reference becomes the debit's RRN - the bank's day file names the debit by it (§7.1) - so
it must be one: 1-12 letters or digits, and no two approved lines of the file share it. An
empty list means the file may be applied; applying it (posting the debits' results) is the debit engine's job: the
drop watcher hands it to the handler registered for ``debit_result`` (``watch.register_handler``).
"""
from __future__ import annotations

import re

REQ_HEADER = re.compile(r"H\|(\d{1,11})\|([^|]{1,32})\|(\d{1,9})\|(\d{1,18})")
REQ_LINE = re.compile(r"D\|(\d{1,9})\|([0-9A-Za-z]{1,20})\|([\x21-\x7b\x7d-\x7e]{1,28})\|([1-9]\d{0,14})\|"
                      r"((?:\d{6})(?:,\d{6})*)")
RET_HEADER = re.compile(r"H\|(\d{1,11})\|([^|]{1,32})\|(\d{1,9})\|(\d{1,18})\|(\d{1,9})\|(\d{1,18})\|(\d{1,9})\|(\d{1,18})")
RET_LINE = re.compile(r"D\|(\d{1,9})\|([0-9A-Za-z]{1,20})\|([\x21-\x7b\x7d-\x7e]{1,28})\|([1-9]\d{0,14})\|"
                      r"([0-9A-Z]{2})\|([^|]{0,40})")
NAME = re.compile(r"^(\d{1,11})_([^._][^.]*)\.(req|ret)$")
# an approved line's bank reference is the debit's RRN in the bank's day file (§7.1): field 37's
# an 12, as the day file's reader takes it (ledger.recon.bank_file)
RRN = re.compile(r"[0-9A-Za-z]{1,12}")


def _lines(data) -> list[str]:
    text = data.decode("gbk") if isinstance(data, (bytes, bytearray)) else data
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse_request(data) -> tuple[tuple[str, str], dict[int, tuple[str, str, int]], list[tuple]]:
    """((bank, batch), {seq: (customer, account, amount)}, problems)."""
    problems: list[tuple] = []
    try:
        lines = _lines(data)
    except UnicodeDecodeError as exc:
        return ("", ""), {}, [(0, "-", f"request file is not GBK text: {exc.reason}")]
    if not lines or not (h := REQ_HEADER.fullmatch(lines[0])):
        return ("", ""), {}, [(1, "header", "request file header must be H|bank|batch|count|sum")]
    seqs: dict[int, tuple[str, str, int]] = {}
    for no, line in enumerate(lines[1:], start=2):
        m = REQ_LINE.fullmatch(line)
        if not m:
            problems.append((no, "-", "request line malformed"))
            continue
        seq = int(m.group(1))
        if seq in seqs:
            problems.append((no, "seq", f"request seq {seq} twice"))
        seqs[seq] = (m.group(2), m.group(3), int(m.group(4)))
    if int(h.group(3)) != len(lines) - 1 or int(h.group(4)) != sum(a for _, _, a in seqs.values()):
        problems.append((1, "header", "request header totals disagree with its lines"))
    return (h.group(1), h.group(2)), seqs, problems


def validate_debit_result(request, result) -> list[tuple[int, str, str]]:
    (req_bank, req_batch), wanted, problems = parse_request(request)
    if problems:
        return [(0, "request", f"the request file itself is bad: line {ln}, {f}: {r}") for ln, f, r in problems]
    out: list[tuple[int, str, str]] = []
    try:
        lines = _lines(result)
    except UnicodeDecodeError as exc:
        return [(0, "-", f"not GBK text: {exc.reason}")]
    if not lines:
        return [(1, "-", "empty file: a header line is required")]
    h = RET_HEADER.fullmatch(lines[0])
    if not h:
        out.append((1, "header", "must be H|bank|batch|lines|sum|approved lines|approved sum|declined lines|declined sum"))
    else:
        if h.group(1) != req_bank:
            out.append((1, "bank_code", f"result is for bank {h.group(1)}, the request for {req_bank}"))
        if h.group(2) != req_batch:
            out.append((1, "batch_no", f"result is for batch {h.group(2)}, the request is batch {req_batch}"))
    seen: dict[int, int] = {}
    refs: dict[str, int] = {}
    approved = [0, 0]
    declined = [0, 0]
    total = 0
    for no, line in enumerate(lines[1:], start=2):
        m = RET_LINE.fullmatch(line)
        if not m:
            fields = line.split("|")
            reason = (f"a D line has 7 fields separated by '|', this one has {len(fields)}" if len(fields) != 7
                      else "malformed: D|seq|customer|account|amount|response code|bank reference")
            out.append((no, "-", reason))
            continue
        seq, cust, account, amount, code = int(m.group(1)), m.group(2), m.group(3), int(m.group(4)), m.group(5)
        if seq in seen:
            out.append((no, "seq", f"seq {seq} answered twice (first on line {seen[seq]})"))
            continue
        seen[seq] = no
        if seq not in wanted:
            out.append((no, "seq", f"seq {seq} is not in the request (extra line)"))
            continue
        w_cust, w_account, w_amount = wanted[seq]
        if cust != w_cust:
            out.append((no, "customer_no", f"{cust!r} but the request's seq {seq} is customer {w_cust!r}"))
        if account != w_account:
            out.append((no, "account", f"{account!r} but the request's seq {seq} is account {w_account!r}"))
        if amount != w_amount:
            out.append((no, "amount", f"{amount} but the request's seq {seq} is {w_amount}"))
        if code == "00":
            ref = m.group(6)
            if not RRN.fullmatch(ref):
                out.append((no, "bank_reference", f"{ref!r}: an approved line's bank reference is its RRN in the "
                                                  f"bank's day file (§7.1), 1-12 letters or digits"))
            elif ref in refs:
                out.append((no, "bank_reference", f"{ref!r} is also the reference of line {refs[ref]}: one RRN "
                                                  f"names one debit (§7.1)"))
            else:
                refs[ref] = no
        total += amount
        bucket = approved if code == "00" else declined
        bucket[0] += 1
        bucket[1] += amount
    for seq in sorted(set(wanted) - set(seen)):
        out.append((0, "seq", f"request seq {seq} is not answered (missing line)"))
    if h:
        got = [int(h.group(i)) for i in range(3, 9)]
        want = [len(lines) - 1, total, approved[0], approved[1], declined[0], declined[1]]
        names = ("lines", "sum", "approved_lines", "approved_sum", "declined_lines", "declined_sum")
        for name, g, w in zip(names, got, want):
            if g != w:
                out.append((1, name, f"header says {g}, the lines give {w}"))
    return sorted(out)

"""The finance statement (docs/spec/INTERFACE.md §7.3): ISO 20022 camt.053 (001.02 and later) or the CSV form.

camt.053 is read by a streaming parser on the standard library's expat, hardened the way
defusedxml hardens it (with exceptions of the same names): a DOCTYPE is refused outright (so no
internal entity can be declared: no billion laughs), as are entity declarations, external entity
references and parameter entities; nothing is fetched from the network; a declared encoding expat
cannot read (a multi-byte one such as GBK; ISO 20022 XML is UTF-8) is refused; the file may be at most
``MAX_BYTES``; elements are not kept (each ``Ntry`` is turned into a ``StatementEntry`` and
dropped), so memory stays flat, and it is linear: a 20,000-entry statement parses in well under a
second (``pycamt`` was not used: measured here, it slows down quadratically with the number of entries).

Versions: the root namespace must be ``urn:iso:std:iso:20022:tech:xsd:camt.053.001.NN`` with NN >= 02.
Element names are the same across versions for what is read here, except the status (``Sts``
text up to 001.07, ``Sts/Cd`` from 001.08) and the debtor's name (``RltdPties/Dbtr/Nm``, from
001.08 ``RltdPties/Dbtr/Pty/Nm``); both forms are accepted. Only booked entries (BOOK) count;
others (PDNG, INFO) are skipped and counted. ``RvslInd`` true marks a reversal of an earlier entry.
An entry with several transaction details that carry their own amounts gives one
``StatementEntry`` per detail (a batch booking).

CSV: UTF-8 (BOM allowed) with the exact header line
``booking_date,value_date,amount,direction,method,cheque_no,reference,counterparty``; amount in
fen > 0, direction C or D, dates YYYY-MM-DD, method empty or 01/02/03/10. The CSV form has no
reversal indicator: a reversal is simply an entry in the other direction.

Either way a statement with a bad entry is refused whole: ``errors`` names every bad line (XML:
the entry's line in the file), field and reason.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from xml.parsers import expat


MAX_BYTES = 512 * 1024 * 1024
CSV_HEADER = ("booking_date", "value_date", "amount", "direction", "method", "cheque_no", "reference", "counterparty")
CAMT_NS = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.(\d{2})$")
CHEQUE_CODES = {"CCHQ", "BCHQ", "CDFT", "CQRV", "URCQ", "UPCQ", "ARPD", "CHQ", "03"}
NOT_PROVIDED = {"NOTPROVIDED", "NONREF", ""}


class StatementError(ValueError):
    """The statement cannot be read at all (hostile or broken XML, unknown format)."""


@dataclass(frozen=True, order=True)
class EntryError:
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, field {self.field}: {self.reason}"


@dataclass
class StatementEntry:
    line: int                       # line in the file where the entry starts
    booking_date: date
    value_date: date | None
    amount: int                     # fen, > 0
    direction: str                  # C credit | D debit
    reversal: bool = False
    method: str | None = None       # 03 cheque, when the entry says so
    cheque_no: str | None = None
    reference: str = ""             # the remittance information (first found, see references)
    references: tuple[str, ...] = ()   # every candidate reference, most specific first
    counterparty: str = ""
    entry_ref: str = ""             # AcctSvcrRef / NtryRef


@dataclass
class Statement:
    path: Path
    sha256: str
    format: str = ""                # camt.053.001.NN | csv
    account: str = ""
    statement_id: str = ""
    entries: list[StatementEntry] = field(default_factory=list)
    skipped: int = 0                # not booked
    errors: list[EntryError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.errors:
            return (f"statement {self.path.name}: REJECTED, {len(self.errors)} error(s); nothing was applied. "
                    + "; ".join(str(e) for e in self.errors[:5]) + (" ..." if len(self.errors) > 5 else ""))
        return f"statement {self.path.name} ({self.format}): {len(self.entries)} entries"


def sniff(head: bytes) -> str | None:
    """'camt' or 'csv' (a finance statement) from a file's first bytes, else None."""
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"<") and b"camt.053.001." in head:
        return "camt"
    first = text.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    if tuple(c.strip() for c in first.split(",")) == CSV_HEADER:
        return "csv"
    return None


def read_statement(path: str | Path, data: bytes | None = None, max_bytes: int = MAX_BYTES) -> Statement:
    path = Path(path)
    if data is None:
        if path.stat().st_size > max_bytes:
            raise StatementError(f"{path.name}: larger than {max_bytes} bytes; refused")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise StatementError(f"{path.name}: larger than {max_bytes} bytes; refused")
    st = Statement(path, hashlib.sha256(data).hexdigest())
    kind = sniff(data[:4096])
    if kind == "camt":
        _read_camt(st, data)
    elif kind == "csv":
        _read_csv(st, data)
    else:
        raise StatementError(f"{path.name}: neither camt.053 XML nor the statement CSV header "
                             f"({','.join(CSV_HEADER)})")
    st.errors.sort()
    return st


# ---------------------------------------------------------------------------------------------
# camt.053

def _fen(text: str) -> int | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.01")):
        return None
    return int(value * 100)


def _date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


class _CamtReader:
    """Expat handlers: collects, per Ntry, the text of its descendants by path relative to the Ntry
    (and, inside each TxDtls, relative to that TxDtls)."""

    def __init__(self, st: Statement, parser):
        self.st, self.p = st, parser
        self.depth = 0
        self.ns = None
        self.path: list[str] = []
        self.buf: list[str] = []
        self.ntry: dict | None = None
        self.ntry_depth = 0
        self.txs: list[dict] = []
        self.tx: dict | None = None
        self.tx_depth = 0
        self.target: dict | None = None
        self.rels: list[str] = []
        self.stmt_fields: dict[str, str] = {}

    def start(self, name: str, attrs: dict) -> None:
        local = name[name.rfind("}") + 1:]
        if self.depth == 0:
            uri = name[:max(name.rfind("}"), 0)]
            m = CAMT_NS.match(uri)
            if local != "Document" or m is None:
                raise StatementError(f"not a camt.053 document (root {local!r} in namespace {uri!r})")
            if int(m.group(1)) < 2:
                raise StatementError(f"camt.053.001.{m.group(1)} is not supported: 001.02 and later")
            self.ns = uri
            self.st.format = f"camt.053.001.{m.group(1)}"
        self.depth += 1
        self.buf = []
        if self.ntry is None:
            self.path.append(local)
            if local == "Ntry" and len(self.path) >= 2 and self.path[-2] == "Stmt":
                self.ntry = self.target = {"_line": self.p.CurrentLineNumber}
                self.ntry_depth = self.depth
                self.txs = []
                self.rels = [""]
            return
        if local == "TxDtls":
            self.tx = self.target = {}
            self.tx_depth = self.depth
            self.txs.append(self.tx)
            self.rels.append("")
            return
        parent = self.rels[-1]
        rel = f"{parent}/{local}" if parent else local
        self.rels.append(rel)
        if local == "Amt" and "Ccy" in attrs:
            self.target.setdefault(rel + "@Ccy", attrs["Ccy"])

    def data(self, text: str) -> None:
        self.buf.append(text)

    def end(self, name: str) -> None:
        depth = self.depth
        self.depth -= 1
        if self.ntry is not None:
            if depth == self.ntry_depth:
                self._entry()
                self.ntry = self.target = None
                self.path.pop()
            elif self.tx is not None and depth == self.tx_depth:
                self.tx = None
                self.target = self.ntry
                self.rels.pop()
            else:
                rel = self.rels.pop()
                if self.buf:
                    text = "".join(self.buf).strip()
                    if text:
                        self.target.setdefault(rel, text)
            self.buf = []
            return
        text = "".join(self.buf).strip() if self.buf else ""
        self.buf = []
        if text and len(self.path) >= 3 and "Stmt" in self.path:
            rel = "/".join(self.path[self.path.index("Stmt") + 1:])
            self.stmt_fields.setdefault(rel, text)
        self.path.pop()

    def _entry(self) -> None:
        n, st = self.ntry, self.st
        line = n["_line"]
        errors_before = len(st.errors)

        def bad(fld: str, reason: str) -> None:
            st.errors.append(EntryError(line, fld, reason))

        status = n.get("Sts/Cd") or n.get("Sts") or ""
        if status and status != "BOOK":
            st.skipped += 1
            return
        cd = n.get("CdtDbtInd")
        if cd not in ("CRDT", "DBIT"):
            bad("CdtDbtInd", f"must be CRDT or DBIT, not {cd!r}")
        reversal = (n.get("RvslInd") or "false").lower() in ("true", "1")
        booking = _date(n.get("BookgDt/Dt") or n.get("BookgDt/DtTm"))
        if booking is None:
            bad("BookgDt", f"missing or not a date: {n.get('BookgDt/Dt') or n.get('BookgDt/DtTm')!r}")
        value = _date(n.get("ValDt/Dt") or n.get("ValDt/DtTm"))
        amount = _fen(n.get("Amt", ""))
        if amount is None:
            bad("Amt", f"must be an amount > 0 with at most 2 decimals, not {n.get('Amt')!r}")
        elif n.get("Amt@Ccy", "CNY") != "CNY":
            bad("Amt", f"currency must be CNY, not {n.get('Amt@Ccy')!r}")
        if len(st.errors) > errors_before:
            return
        parts = []
        with_amounts = [tx for tx in self.txs if "Amt" in tx or "AmtDtls/TxAmt/Amt" in tx]
        if len(with_amounts) > 1:
            for tx in with_amounts:
                fen = _fen(tx.get("Amt") or tx.get("AmtDtls/TxAmt/Amt", ""))
                if fen is None:
                    bad("TxDtls/Amt", f"not a valid amount: {tx.get('Amt') or tx.get('AmtDtls/TxAmt/Amt')!r}")
                    return
                parts.append((fen, tx))
            if sum(f for f, _ in parts) != amount:
                bad("TxDtls/Amt", f"transaction details sum to {sum(f for f, _ in parts)} fen, the entry is {amount}")
                return
        else:
            parts.append((amount, self.txs[0] if self.txs else {}))
        for fen, tx in parts:
            refs = [tx.get("RmtInf/Ustrd"), tx.get("RmtInf/Strd/CdtrRefInf/Ref"), tx.get("Refs/EndToEndId"),
                    n.get("NtryRef"), n.get("AddtlNtryInf"), tx.get("AddtlTxInf")]
            refs = tuple(r for r in refs if r and r.upper() not in NOT_PROVIDED)
            cheque = tx.get("Refs/ChqNb")
            codes = {tx.get("BkTxCd/Domn/Fmly/SubFmlyCd"), n.get("BkTxCd/Domn/Fmly/SubFmlyCd"),
                     tx.get("BkTxCd/Prtry/Cd"), n.get("BkTxCd/Prtry/Cd")}
            method = "03" if cheque or (codes & CHEQUE_CODES) else None
            if method == "03" and not cheque and refs:
                cheque = refs[0]
            party = (tx.get("RltdPties/Dbtr/Nm") or tx.get("RltdPties/Dbtr/Pty/Nm") or tx.get("RltdPties/Cdtr/Nm")
                     or tx.get("RltdPties/Cdtr/Pty/Nm") or "")
            st.entries.append(StatementEntry(
                line, booking, value, fen, "C" if cd == "CRDT" else "D", reversal, method, cheque,
                refs[0] if refs else "", refs, party,
                n.get("AcctSvcrRef") or tx.get("Refs/AcctSvcrRef") or n.get("NtryRef") or ""))


class HostileXML(ValueError):
    """A statement's XML tried something no statement needs (a DTD, an entity, an external reference)."""


class DTDForbidden(HostileXML):
    pass


class EntitiesForbidden(HostileXML):
    pass


class ExternalReferenceForbidden(HostileXML):
    pass


def _forbid_dtd(name, sysid, pubid, has_internal_subset):
    raise DTDForbidden(name)


def _forbid_entity(name, is_parameter_entity, value, base, sysid, pubid, notation_name):
    raise EntitiesForbidden(name)


def _forbid_unparsed(name, base, sysid, pubid, notation_name):
    raise EntitiesForbidden(name)


def _forbid_external(context, base, sysid, pubid):
    raise ExternalReferenceForbidden(sysid)


def _read_camt(st: Statement, data: bytes) -> None:
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _forbid_dtd
    parser.EntityDeclHandler = _forbid_entity
    parser.UnparsedEntityDeclHandler = _forbid_unparsed
    parser.ExternalEntityRefHandler = _forbid_external
    reader = _CamtReader(st, parser)
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.data
    try:
        step = 1 << 20
        for offset in range(0, len(data), step):
            parser.Parse(data[offset:offset + step], False)
        parser.Parse(b"", True)
    except HostileXML as exc:
        raise StatementError(f"{st.path.name}: refused, hostile XML: {type(exc).__name__}: DTDs and entities are not "
                             f"allowed in a statement") from None
    except expat.ExpatError as exc:
        raise StatementError(f"{st.path.name}: not well-formed XML: {exc}") from None
    except (ValueError, LookupError) as exc:   # pyexpat on a declared encoding it cannot read, e.g. GBK
        raise StatementError(f"{st.path.name}: XML in an encoding the reader does not support ({exc}); ISO 20022 "
                             f"messages are UTF-8") from None
    if reader.ns is None:
        raise StatementError(f"{st.path.name}: empty document")
    acct = reader.stmt_fields
    st.account = acct.get("Acct/Id/IBAN") or acct.get("Acct/Id/Othr/Id") or ""
    st.statement_id = acct.get("Id", "")


# ---------------------------------------------------------------------------------------------
# CSV

def _read_csv(st: Statement, data: bytes) -> None:
    st.format = "csv"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        st.errors.append(EntryError(data.count(b"\n", 0, exc.start) + 1, "-", f"not UTF-8 text ({exc.reason})"))
        return
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        st.errors.append(EntryError(1, "-", "no header line"))
        return
    if tuple(h.strip() for h in header) != CSV_HEADER:
        st.errors.append(EntryError(1, "-", f"header must be {','.join(CSV_HEADER)}"))
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            st.errors.append(EntryError(reader.line_num, "-", f"bad CSV quoting: {exc}"))
            break
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(CSV_HEADER):
            st.errors.append(EntryError(line, "-", f"{len(row)} fields, the header has {len(CSV_HEADER)}"))
            continue
        f = dict(zip(CSV_HEADER, (c.strip() for c in row)))
        n = len(st.errors)
        booking = _date(f["booking_date"]) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", f["booking_date"]) else None
        if booking is None:
            st.errors.append(EntryError(line, "booking_date", f"must be a date YYYY-MM-DD, not {f['booking_date']!r}"))
        value = None
        if f["value_date"]:
            value = _date(f["value_date"]) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", f["value_date"]) else None
            if value is None:
                st.errors.append(EntryError(line, "value_date", f"must be a date YYYY-MM-DD, not {f['value_date']!r}"))
        if not re.fullmatch(r"[1-9]\d{0,14}", f["amount"]):
            st.errors.append(EntryError(line, "amount", f"must be an integer number of fen > 0, not {f['amount']!r}"))
        if f["direction"] not in ("C", "D"):
            st.errors.append(EntryError(line, "direction", f"must be C or D, not {f['direction']!r}"))
        if f["method"] not in ("", "01", "02", "03", "10"):
            st.errors.append(EntryError(line, "method", f"must be empty, 01, 02, 03 or 10, not {f['method']!r}"))
        if f["method"] == "03" and not f["cheque_no"]:
            st.errors.append(EntryError(line, "cheque_no", "a cheque (method 03) needs its number"))
        if len(f["reference"]) > 140 or len(f["counterparty"]) > 140 or len(f["cheque_no"]) > 35:
            st.errors.append(EntryError(line, "reference", "reference and counterparty at most 140, cheque_no 35 characters"))
        if len(st.errors) > n:
            continue
        refs = tuple(r for r in (f["reference"],) if r)
        st.entries.append(StatementEntry(line, booking, value, int(f["amount"]), f["direction"], False,
                                         f["method"] or None, f["cheque_no"] or None, f["reference"], refs,
                                         f["counterparty"], ""))

"""Imports of the billing system's files: customers, bills and debit agreements (docs/spec/BILLING-FILES.md).

A file's header names its columns: the required ones (``HEADERS``), then, in that order, as many of
the optional trailing ones (``OPTIONAL``) as the file has: customers ``district`` and
``collection_type``, bills ``category``. A column the file does not have is not given: a known
customer keeps its stored district or collection type (an empty value in a column the file has
clears it); a bill is category ``E``. So a 1.0 file of the required columns imports as it always did.

A file is applied whole or not at all. Every line is checked: the encoding (UTF-8, optional BOM),
the quoting (RFC 4180), the header, every field, and the facts in the database (known customers,
bill ids already imported, active agreements). Any bad line rejects the file and the result lists
every bad line with its column and the reason; nothing is written. A good file is applied in one
transaction, and an ``imports`` row records it (sha256, counts, actor).

Imports stream: memory stays flat whatever the file's size. A file is read twice:
- pass 0 reads its bytes: the sha256, the encoding (UTF-8, a byte-order mark only at the start)
  and its number of lines (the progress's total); a file that is not UTF-8 is rejected here.
- pass 1 reads its CSV records, checks each line's fields, and takes the good ones
  ``CHUNK_LINES`` at a time: the facts the chunk needs are looked up in the database in a few
  queries (its customers, its bill ids, ...) and its rows are written at once (COPY on
  PostgreSQL, one executemany per table elsewhere), in the one transaction of the file (set).
  Lines after a bad one are still checked and their good rows still written, so that later
  checks see the same database a good file would have made; at the end a rejected file (set) is
  rolled back: nothing of it stays. A file's keys met so far (customer numbers, bill ids,
  agreements) and the line each was first met on go to a temporary table, so that a key seen
  again is reported with its first line however far back that was.
Only the current chunk, the errors and, for bills, the new bills of customers with a prepaid
balance (usually few) are held in memory.

Repeat imports are idempotent:
- customers: an identical row is skipped; a known customer_no with other values (in the columns
  the file has) is updated, its version goes up by one, and the update is recorded
  (``customer_history``, which keeps every column of each version, + ``audit_log``).
- bills: a bill_id already imported with the same content is skipped and counted; with other
  content it is an error (a correction is an operator's command, see ``ledger.corrections``).
- agreements: keyed by (customer_no, bank_code, account_no); identical rows skipped, changed
  ones updated and audited. After the file, a customer has at most one active agreement.

Every new bill writes a journal entry (Dr receivable principal+penalty; Cr revenue principal;
Cr penalty_income penalty) and, when the customer has a mobile number, an SMS notice worded after
the customer's collection type (``config.notices.bill_notice``). A customer's collection type as
stored is what the billing system gave; an empty one is decided when the notice is written: D while
the customer has an active agreement, else C. A file set applies its agreements before its bills,
so that a new customer's first bills are worded after the agreement that comes with them.

Prepaid balances pay bills as they arrive (``ledger.posting.apply_prepaid``, the posting kind
``PrepaidApplication``), once the whole file is written: the
customer's unpaid bills are taken oldest first (period, due date, bill id), and a bill is paid
only when the balance covers it entirely, since bills are paid whole; the first bill the balance
does not cover stops the run, so a newer bill is never paid while an older one stays unpaid. Each
bill so paid gets a prepaid movement (kind ``applied``, negative), an allocation pointing at it,
and a journal entry (Dr prepaid / Cr receivable); its SMS says it has been paid instead of asking
for payment.

Progress: ``import_file``/``import_files`` take a ``ledger.progress.Progress`` (default: none)
and advance it a chunk at a time.

The package, by job: ``formats`` (kinds, columns, single values, results), ``reading`` (the two
passes over a file), ``line_checks`` (a line's fields), ``applying`` (what every file kind shares
as it is applied), ``customers_file``, ``bills_file``, ``agreements_file`` (each kind),
``bill_notices`` (the new bills' SMS), ``run`` (a file or a set in one transaction).
"""
from ledger.imports.bill_notices import bill_notice_facts, bill_notice_rows
from ledger.imports.formats import HEADERS, KINDS, OPTIONAL, SET_FILE_NAMES, ImportResult, LineError
from ledger.imports.run import import_file, import_files, set_files, write_report

__all__ = ["HEADERS", "KINDS", "OPTIONAL", "SET_FILE_NAMES", "ImportResult", "LineError", "bill_notice_facts",
           "bill_notice_rows", "import_file", "import_files", "set_files", "write_report"]

"""Outbound debit links (docs/spec/INTERFACE.md §1, §4.1, §4.6): the gateway connects to a bank's host.

``BankLink`` keeps ``debit.connections`` TCP connections to one bank. Each connection signs on
(0800/001) and reads the MAK the bank issues in its 0810 (``MK``/``KV`` under the ZMK); the
newest MAK is used for every connection, the one it replaced is still accepted on answers for
the grace period (``ledger.key_store.KeyStore``). A connection with no traffic from the bank for
``echo_interval_s`` sends an echo (0800/301) and is closed if that goes unanswered; the bank's
own echoes are answered (field 15: the utility's business date from the link's ``clock``), 0810s never
are, so echoes cannot loop. A lost or refused connection is retried with exponential backoff and
jitter (``runtime.ratelimit.Backoff``).

``send(mti, fields)`` writes a request the caller has fully identified (fields 7, 11, 32: the
debit engine assigns and stores them before the send, and gives a debit a new identity only
when the bank answered A0, §4.7) and returns a Deferred for the bank's answer, matched by 7, 11
and 32 and MAC-checked. Outcomes:

- the answer (a ``Message``) - whatever its response code;
- ``DebitTimeout``: sent, no valid answer within ``timeout_s`` (the caller reverses);
- ``OutcomeUnknown`` (a ``DebitTimeout``): sent, then the connection was lost before an answer;
- ``NotSent`` (``LinkDown``, ``LinkBusy``, ``LinkStopped``, or the wire layer's
  ``MessageError`` for fields that cannot be encoded): certainly never written, nothing to reverse.

An answer that comes after its request timed out goes to ``on_late_response(message)``.
At most ``max_in_flight`` requests are outstanding per bank and at most ``max_per_second``
are written per second (token bucket); the rest wait in a queue, reversals ahead of debits.

All timers run on ``clock`` (default: the reactor), so tests drive them with ``task.Clock``.

The link is three parts over one state (``BankLink`` joins them): the connection pool
(``pool``, ``connection``: connect, reconnect with backoff, sign on, echo), the dispatcher
(``dispatcher``: the queues and caps that feed the connections) and the multiplexer (``mux``:
answers matched to requests, MAC-checked, timed out). Numbering, network management and
answer matching tables are the connection kit's (``iso8583_specs.links``).
"""
from __future__ import annotations

from engines.link.debit_connection import DebitConnection
from engines.link.dispatcher import REVERSAL_MTIS
from engines.link.link import RESPONSE_MTIS, BankLink
from engines.link.link_metrics import LinkMetrics, PrometheusLinkMetrics
from engines.link.messages import CURRENCY, DEBIT, debit_fields, original_data, reversal_fields
from engines.link.outcomes import DebitTimeout, LinkBusy, LinkDown, LinkError, LinkStopped, NotSent, OutcomeUnknown
from engines.link.pool import CHANNEL

__all__ = ["BankLink", "CHANNEL", "CURRENCY", "DEBIT", "DebitConnection", "DebitTimeout", "LinkBusy", "LinkDown",
           "LinkError", "LinkMetrics", "LinkStopped", "NotSent", "OutcomeUnknown", "PrometheusLinkMetrics",
           "RESPONSE_MTIS", "REVERSAL_MTIS", "debit_fields", "original_data", "reversal_fields"]

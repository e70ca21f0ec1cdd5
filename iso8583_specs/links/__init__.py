"""The ISO 8583 connection kit: what every connection of ours does the same way.

- ``connection``: a connection on a byte stream (``IsoConnection``: framing in, framing out,
  TCP_NODELAY) and the frame timer;
- ``numbering``: STANs, RRNs, request times (fields 7, 12, 13) and the 7/11/32 request key;
- ``network``: network management messages (0800 sign-on/echo/sign-off, their 0810 answers)
  and the echo timer of an idle connection;
- ``mux``: the multiplexer that matches answers to outstanding requests by fields 7, 11 and 32
  (jPOS QMUX: send a request, get a Deferred of its answer, give it up after a time limit).

The connection kinds (the gateway's counter channel, the debit link, the counter and bank
simulators) differ only in what they do with requests and answers. This package sits in the
wire layer: it imports nothing from gateway, engines or ledger.
"""
from .connection import FrameTimer, IsoConnection, no_delay
from .mux import Multiplexer, RequestTimedOut
from .network import EchoTimer, network_answer, network_request
from .numbering import Rrns, Stans, clock_sequence, request_key, times_at, times_of

__all__ = ["EchoTimer", "FrameTimer", "IsoConnection", "Multiplexer", "RequestTimedOut", "Rrns", "Stans",
           "clock_sequence", "network_answer", "network_request", "no_delay", "request_key",
           "times_at", "times_of"]

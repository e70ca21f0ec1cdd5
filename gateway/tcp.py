"""TCP settings every ISO 8583 connection of ours uses, gateway and simulators alike."""
from __future__ import annotations


def no_delay(transport) -> None:
    """Switch Nagle's algorithm off. Several requests may be outstanding on one connection, so one
    side often writes two small frames in a row; with Nagle on, the second waits for the ACK of
    the first, which the peer holds back (delayed ACK) for up to 40 ms: the p99 of a loaded link
    was ~45 ms where the gateway itself took 11. Frames are whole messages: nothing is gained by
    holding them back."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)

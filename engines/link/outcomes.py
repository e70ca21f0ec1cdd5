"""What became of a request on the debit link: the failures ``BankLink.send`` reports.

``NotSent`` and its kinds: certainly never written, nothing to reverse. ``DebitTimeout`` and
``OutcomeUnknown``: written, no answer: the caller reverses."""
from __future__ import annotations


class LinkError(Exception):
    """Base of the link's failures."""


class NotSent(LinkError):
    """The request was never written to the bank: nothing happened there, nothing to reverse."""


class LinkDown(NotSent):
    """No signed-on connection to the bank within the timeout."""


class LinkBusy(NotSent):
    """Queued behind the in-flight or rate cap for longer than the timeout."""


class LinkStopped(NotSent):
    """The link was stopped before the request could be written."""


class DebitTimeout(LinkError):
    """Written, but no valid answer within the timeout: the outcome is unknown, reverse it."""


class OutcomeUnknown(DebitTimeout):
    """Written, then the connection was lost before an answer came: reverse it, never resend."""

"""The one database probe: what /readyz and ``gridpay status`` ask to know the database answers."""
from __future__ import annotations

from sqlalchemy import Engine, literal_column, select

PROBE = select(literal_column("1"))  # SELECT 1, or SELECT 1 FROM DUAL on Oracle before 23


def probe(engine: Engine) -> None:
    """One round trip that works on every supported dialect; raises when the database does not answer."""
    with engine.connect() as conn:
        conn.execute(PROBE)

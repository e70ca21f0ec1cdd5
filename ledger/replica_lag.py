"""How far the read replica (``database.replica_url``, a PostgreSQL hot standby) is behind: the
seconds since the last transaction it replayed was committed on the primary, read on the standby.

A standby that has replayed everything it received is 0 s behind, however old that last commit:
an idle primary sends nothing, and the reports then read what the primary holds. A database that
is no standby (a replica_url pointing at a primary) is 0 s behind too. What this cannot see from
the standby is a primary it no longer hears from: ``gridpay status`` compares the two's WAL.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import text

# NULL: a standby behind that has replayed no transaction since it started (nothing to time it by)
REPLAY_LAG_S = text(
    "select case when not pg_is_in_recovery() then 0 "
    "when pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0 "
    "else extract(epoch from now() - pg_last_xact_replay_timestamp()) end")


def replay_lag_s(conn) -> float | None:
    """The standby's replay lag in seconds (0: caught up, or no standby); None: not known yet."""
    lag = conn.execute(REPLAY_LAG_S).scalar()
    return None if lag is None else max(0.0, float(lag))


class ReplicaLagMetrics:
    """``gridpay_replica_replay_lag_seconds`` in ``registry``, set from a connection to the replica."""

    def __init__(self, registry: CollectorRegistry):
        self.lag = Gauge("gridpay_replica_replay_lag_seconds", "How far the read replica (database.replica_url) "
                         "is behind the primary: seconds since the last transaction it replayed was committed "
                         "(0 when it has replayed all it received); NaN until known",
                         registry=registry)
        self.lag.set(float("nan"))   # not read yet: unknown, not 0 s behind

    def refresh(self, replica_conn) -> None:
        lag = replay_lag_s(replica_conn)
        self.lag.set(float("nan") if lag is None else lag)

"""Persists MAC keys so that every gateway instance (they share only the database) knows them.

Keys are stored encrypted under the bank's ZMK, as they travel in the 0810; each change is
a new row, so the table is also the history of a bank's keys.
"""
from __future__ import annotations

from sqlalchemy import and_, func, insert, select
from sqlalchemy.exc import IntegrityError

from config.clock import SYSTEM_CLOCK, Clock
from iso8583_specs import keys as wire_keys
from ledger.key_store import KeyState
from ledger.key_tables import bank_keys


class DbKeyBackend:
    def __init__(self, engine, zmk_for, clock: Clock = SYSTEM_CLOCK):
        self.engine = engine
        self.zmk_for = zmk_for
        self.clock = clock

    def save(self, bank: str, channel: str, state: KeyState) -> None:
        zmk = self.zmk_for(bank)
        row = {"bank_code": bank, "channel": channel, "version": state.version,
               "mak_under_zmk": wire_keys.encrypt_key(zmk, state.current).hex().upper() if state.current else None,
               "previous_under_zmk": wire_keys.encrypt_key(zmk, state.previous).hex().upper() if state.previous else None,
               "replaced_at": state.replaced_at, "saved_at": self.clock.now()}
        latest = self.load(bank, channel)
        if latest is not None and latest.version >= row["version"]:
            row["version"] = latest.version + 1  # another instance moved on meanwhile: ours is newer still
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(bank_keys), row)
        except IntegrityError:
            row["version"] += 1
            with self.engine.begin() as conn:
                conn.execute(insert(bank_keys), row)

    def recent(self, bank: str, channel: str, versions: int = 6) -> list[bytes]:
        """The current keys of the newest versions, newest first, each once."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(bank_keys.c.mak_under_zmk).where(bank_keys.c.bank_code == bank, bank_keys.c.channel == channel,
                                                        bank_keys.c.mak_under_zmk.is_not(None))
                .order_by(bank_keys.c.version.desc()).limit(versions)).scalars().all()
        zmk = self.zmk_for(bank)
        keys = [wire_keys.decrypt_key(zmk, bytes.fromhex(hexkey)) for hexkey in rows]
        return list(dict.fromkeys(keys))

    def load(self, bank: str, channel: str) -> KeyState | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(bank_keys).where(bank_keys.c.bank_code == bank, bank_keys.c.channel == channel)
                .order_by(bank_keys.c.version.desc()).limit(1)).first()
        return None if row is None else self._state(row)

    def newer(self, channel: str, known: dict[str, int]) -> dict[str, KeyState]:
        """Of the banks in ``known`` (bank: the version held), those whose newest stored state is
        newer, read in one query; only their keys are decrypted. A process that polls every bank's
        key each second pays one statement, not one (and a connection) per bank."""
        if not known:
            return {}
        k = bank_keys.c
        newest = (select(k.bank_code, func.max(k.version).label("version"))
                  .where(k.channel == channel, k.bank_code.in_(sorted(known))).group_by(k.bank_code).subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(select(bank_keys).join(newest, and_(
                k.bank_code == newest.c.bank_code, k.version == newest.c.version)).where(k.channel == channel)).all()
        return {r.bank_code: self._state(r) for r in rows if r.version > known[r.bank_code]}

    def _state(self, row) -> KeyState:
        zmk = self.zmk_for(row.bank_code)
        decrypt = lambda hexkey: wire_keys.decrypt_key(zmk, bytes.fromhex(hexkey)) if hexkey else None  # noqa: E731
        return KeyState(decrypt(row.mak_under_zmk), decrypt(row.previous_under_zmk), row.replaced_at, row.version)


def newest_keys(conn) -> dict[tuple[str, str], object]:
    """The newest bank_keys row of each bank and channel (a null key = signed off)."""
    k = bank_keys.c
    newest = (select(k.bank_code, k.channel, func.max(k.version).label("version"))
              .group_by(k.bank_code, k.channel).subquery())
    rows = conn.execute(select(bank_keys).join(newest, and_(
        k.bank_code == newest.c.bank_code, k.channel == newest.c.channel, k.version == newest.c.version))).all()
    return {(r.bank_code, r.channel): r for r in rows}

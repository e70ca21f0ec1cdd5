"""MAC keys per bank and channel: the current key and, for a grace period, the one it replaced.

docs/spec/INTERFACE.md §4.1: a new MAK replaces the old one for that bank and channel on all its
connections; the old one is still accepted for ``grace_s`` seconds; sign-off drops the key.
Time comes from the process's clock (``config.clock.Clock``; anything with ``seconds()`` will do, e.g.
``twisted.internet.task.Clock``) so the grace period is tested without sleeping.

Several gateway instances share only the database: a ``backend`` (see ``ledger.key_store_db``)
persists every change, and an instance that does not know a bank's newest key reloads it.
"""
from __future__ import annotations

from dataclasses import dataclass

from config.clock import Clock


@dataclass(frozen=True)
class KeyState:
    current: bytes | None
    previous: bytes | None = None
    replaced_at: float | None = None  # when `previous` stopped being current
    version: int = 0


class KeyStore:
    def __init__(self, clock: Clock, grace_s: float = 60.0, backend=None):
        self.clock = clock
        self.grace_s = grace_s
        self.backend = backend
        self._keys: dict[tuple[str, str], KeyState] = {}

    def issue(self, bank: str, channel: str, mak: bytes) -> None:
        """This instance answered a sign-on with ``mak`` (the counter channel, where the gateway
        issues keys). The key it replaces is the newest one stored, which another instance may
        have issued a moment ago: that one stays accepted for the grace period here too (§4.1)."""
        self.refresh(bank, channel)
        self.install(bank, channel, mak)

    def install(self, bank: str, channel: str, mak: bytes) -> None:
        """A sign-on: ``mak`` becomes current; the old key is kept for the grace period."""
        assert len(mak) == 16, "a MAK is a double-length DES key"
        old = self._keys.get((bank, channel), KeyState(None))
        state = KeyState(mak, old.current, self.clock.seconds() if old.current else None, old.version + 1)
        self._keys[(bank, channel)] = state
        if self.backend:
            self.backend.save(bank, channel, state)

    def drop(self, bank: str, channel: str) -> None:
        """A sign-off: no key, no grace."""
        old = self._keys.get((bank, channel), KeyState(None))
        state = KeyState(None, version=old.version + 1)
        self._keys[(bank, channel)] = state
        if self.backend:
            self.backend.save(bank, channel, state)

    def version(self, bank: str, channel: str) -> int:
        """The version held (0: none yet)."""
        return self._keys.get((bank, channel), KeyState(None)).version

    def current(self, bank: str, channel: str) -> bytes | None:
        return self._keys.get((bank, channel), KeyState(None)).current

    def signed_on(self, bank: str, channel: str) -> bool:
        return self.current(bank, channel) is not None

    def accepted(self, bank: str, channel: str) -> list[bytes]:
        """Keys a request's MAC may be made with: the current one, then the previous within its grace."""
        state = self._keys.get((bank, channel), KeyState(None))
        keys = [state.current] if state.current else []
        if state.previous and state.replaced_at is not None:
            if self.clock.seconds() - state.replaced_at < self.grace_s:
                keys.append(state.previous)
        return keys

    def refresh(self, bank: str, channel: str) -> bool:
        """Reload from the backend (another instance may have signed the bank on); True if changed."""
        if not self.backend:
            return False
        return self.take(bank, channel, self.backend.load(bank, channel))

    def take(self, bank: str, channel: str, state: KeyState | None) -> bool:
        """A state loaded from the backend (perhaps on another thread), if newer than ours."""
        if state is None or state.version <= self._keys.get((bank, channel), KeyState(None)).version:
            return False
        self._keys[(bank, channel)] = state
        return True

    def adopt(self, bank: str, channel: str, verifies) -> bool:
        """A peer's message verifies with none of our keys. The peer MACs with the key it holds as
        current, so if one of the backend's recent keys verifies it, that key is the peer's: make
        it current and save it as the newest version. Needed because instances save sign-ons in
        the order their database writes land, which need not be the order the peer issued them:
        the "newest" row can hold a key the peer has already replaced. True if found."""
        if not self.backend:
            return False
        known = self.accepted(bank, channel)
        for key in self.backend.recent(bank, channel):
            if key not in known and verifies(key):
                self.install(bank, channel, key)
                return True
        return False

    def known(self) -> list[tuple[str, str]]:
        return [k for k, s in self._keys.items() if s.current]

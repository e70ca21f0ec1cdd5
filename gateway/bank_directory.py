"""The banks the gateway knows, from configuration: codes, channels and wire dialects."""
from __future__ import annotations

from iso8583_specs.dialects import dialect_for_bank


class BankDirectory:
    def __init__(self, settings):
        self.settings = settings
        self._by_number = {int(code): code for code in settings.banks}
        self._dialects = {code: dialect_for_bank(bank) for code, bank in settings.banks.items()}

    def resolve(self, field32: str) -> str | None:
        """The configured bank code for a field 32 value (compared as a number, as field 90 does)."""
        if field32 in self.settings.banks:
            return field32
        return self.resolve_number(int(field32)) if field32.isdigit() else None

    def resolve_number(self, number: int) -> str | None:
        return self._by_number.get(number)

    def channels(self, code: str) -> list[str]:
        return list(self.settings.banks[code].channels)

    def config(self, code: str):
        return self.settings.banks[code]

    def dialect(self, code: str):
        return self._dialects[code]

    def zmk(self, code: str) -> bytes:
        return self.settings.zmk(code)

"""Configuration: one TOML file, every value overridable from the environment.

``Settings``, ``load_settings`` and ``read_secret`` are imported from ``config.settings`` when first
asked for: a module that needs only the clock or the notices' wording (a posting worker, the
ledger) does not load pydantic and the settings models (a fifth of a second and 9 MiB a process)."""
from config.errors import ConfigError

__all__ = ["ConfigError", "Settings", "load_settings", "read_secret"]


def __getattr__(name: str):
    if name in ("Settings", "load_settings", "read_secret"):
        from config import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'config' has no attribute {name!r}")

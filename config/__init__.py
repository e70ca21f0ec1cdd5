"""Configuration: one TOML file, every value overridable from the environment."""
from config.errors import ConfigError
from config.settings import Settings, load_settings, read_secret

__all__ = ["ConfigError", "Settings", "load_settings", "read_secret"]

"""Configuration: one TOML file, every value overridable from the environment."""
from config.settings import ConfigError, Settings, load_settings, read_secret

__all__ = ["ConfigError", "Settings", "load_settings", "read_secret"]

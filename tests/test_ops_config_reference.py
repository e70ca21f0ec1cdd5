"""docs/configuration.md is generated from config/settings.py and must match it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts import gen_config_docs

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_has_a_description():
    assert gen_config_docs.problems() == []


def test_every_model_field_is_in_the_reference():
    from config.settings import Settings

    keys = {k.path for k in gen_config_docs.walk()}

    def fields(model, prefix):
        for name, field in model.model_fields.items():
            if not prefix and name in gen_config_docs.INTERNAL:
                continue
            path = f"{prefix}.{name}" if prefix else name
            yield path
            nested = gen_config_docs._model_of(field.annotation)
            if nested:
                kind, sub = nested
                yield from fields(sub, {"table": path, "list": f"{path}[]", "dict": f"{path}.*"}[kind])

    assert set(fields(Settings, "")) == keys


def test_reference_shows_types_defaults_constraints_and_overrides():
    text = gen_config_docs.render()
    assert "| `max_connections` | integer | `16` | ≥ 1, ≤ 10,000 | `GRIDPAY_BANKS__<CODE>__MAX_CONNECTIONS` |" in text
    assert "| `port` | integer | required | ≥ 0, ≤ 65,535 | `GRIDPAY_GATEWAY__LISTENERS__<N>__PORT` |" in text
    assert '`"online"` \\| `"file"`' in text
    assert "## `[banks.<code>.debit]`" in text and "## `[[gateway.listeners]]`" in text


def test_the_committed_reference_is_up_to_date():
    result = subprocess.run([sys.executable, "-m", "scripts.gen_config_docs", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + "\n(regenerate: python -m scripts.gen_config_docs)"


def test_the_example_configs_set_only_documented_keys():
    """Every key the examples set is a key of the reference (the loader would refuse others anyway)."""
    import tomllib

    documented = {k.path for k in gen_config_docs.walk()}

    def paths(tree, prefix):
        for key, value in tree.items():
            path = f"{prefix}.{key}" if prefix else key
            if prefix == "banks":
                path = "banks.*"
            yield path
            if isinstance(value, dict) and path not in ("notifier.http_headers",):
                yield from paths(value, path)
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                for item in value:
                    yield from paths(item, f"{path}[]")

    for name in ("gridpay.example.toml", "site.example.toml"):
        tree = tomllib.loads((ROOT / "config" / name).read_text(encoding="utf-8"))
        used = {p for p in paths(tree, "") if p != "banks.*"}
        assert used <= documented, f"{name}: {sorted(used - documented)}"

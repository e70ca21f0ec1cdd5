import pytest

from config import ConfigError, load_settings

GOOD = """
[database]
url = "sqlite:///var/x.db"

[banks.01020000]
dialect = "ascii"
zmk_env = "TEST_ZMK"
channels = ["counter", "debit"]
"""


def write(tmp_path, text):
    path = tmp_path / "gridpay.toml"
    path.write_text(text)
    return path


def test_example_config_loads():
    settings = load_settings("config/gridpay.example.toml", environ={})
    assert settings.banks


def test_env_overrides_any_value(tmp_path):
    path = write(tmp_path, GOOD)
    env = {"GRIDPAY_BANKS__01020000__MAX_CONNECTIONS": "3", "GRIDPAY_DATABASE__URL": "sqlite:///y.db",
           "TEST_ZMK": "0123456789ABCDEFFEDCBA9876543210"}
    settings = load_settings(path, environ=env)
    assert settings.banks["01020000"].max_connections == 3
    assert settings.database.url == "sqlite:///y.db"


def test_zmk_comes_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_ZMK", "0123456789ABCDEFFEDCBA9876543210")
    settings = load_settings(write(tmp_path, GOOD), environ={})
    assert settings.zmk("01020000") == bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


@pytest.mark.parametrize("text, key, words", [
    (GOOD.replace('dialect = "ascii"', 'zmk = "0123"'), "banks.01020000", "may not be written"),
    (GOOD.replace("channels", "chanels"), "banks.01020000.chanels", "unknown key"),
    (GOOD + "\n[banks.abc]\n", "banks", "must be 1 to 11 digits"),
    ("[database]\nurl = 5\n", "database.url", "string"),
    ("[business]\ncutoff = \"25:00\"\n", "business.cutoff", "pattern"),
    ("[database\n", "gridpay.toml", "not valid TOML"),
])
def test_bad_config_names_the_key(tmp_path, text, key, words):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert key in str(info.value)
    assert words in str(info.value)


def test_missing_secret_names_the_variable(tmp_path):
    settings = load_settings(write(tmp_path, GOOD), environ={})
    with pytest.raises(ConfigError, match="TEST_ZMK is not set"):
        settings.zmk("01020000")


def test_env_can_build_lists_of_tables(tmp_path):
    env = {"GRIDPAY_GATEWAY__LISTENERS__0__PORT": "15001", "GRIDPAY_GATEWAY__LISTENERS__0__BANKS": '["01020000"]',
           "GRIDPAY_GATEWAY__LISTENERS__1__PORT": "15002"}
    settings = load_settings(None, environ=env)
    assert [listener.port for listener in settings.gateway.listeners] == [15001, 15002]
    assert settings.gateway.listeners[0].banks == ["01020000"]


def test_top_level_values_can_be_overridden_and_other_variables_are_not_config():
    settings = load_settings(None, environ={"GRIDPAY_DROP_DIR": "/srv/drop", "GRIDPAY_ZMK_01020000": "00" * 16,
                                            "GRIDPAY_REQUIRE_PG": "1"})
    assert settings.drop_dir == "/srv/drop"


def test_environment_for_a_tree_configures_exactly_that_tree():
    from config.settings import environment_for

    tree = {"database": {"url": "sqlite:///x.db"}, "drop_dir": "/srv/drop",
            "gateway": {"listeners": [{"name": "a", "port": 15001, "banks": ["01020000"]}]}}
    settings = load_settings(None, environ=environment_for(tree))
    assert settings.database.url == "sqlite:///x.db" and settings.drop_dir == "/srv/drop"
    assert settings.gateway.listeners[0].banks == ["01020000"] and settings.gateway.listeners[0].port == 15001


@pytest.mark.parametrize("argv", [["db", "upgrade"], ["ledger", "verify"], ["recon", "report", "--date", "2026-12-01"],
                                  ["watch", "--once"]])
def test_a_command_without_a_configuration_creates_no_database_and_says_how_to_choose(tmp_path, argv):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDPAY_")}
    out = subprocess.run([sys.executable, "-m", "gridpay", *argv], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "sqlite:///var/gridpay.db" in out.stderr and str(tmp_path / "var" / "gridpay.db") in out.stderr
    assert "--config" in out.stderr and "GRIDPAY_DATABASE__URL" in out.stderr
    assert not (tmp_path / "var" / "gridpay.db").exists()


def test_a_configuration_file_or_the_environment_chooses_the_database(tmp_path):
    config = tmp_path / "gridpay.toml"
    config.write_text("[gateway]\nmetrics_port = 0\n")
    assert load_settings(config, environ={}).database_url() == "sqlite:///var/gridpay.db"  # the file chose defaults
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert load_settings(None, environ={"GRIDPAY_DATABASE__URL": url}).database_url() == url

"""A ZMK or TLS key file that others may read or write is refused, or used with a warning when
`key_file_permissions = "warn"` (issue 16, defect 14; config/key_files.py)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from config import ConfigError, load_settings
from config.key_files import write_key_file
from gateway_harness import ZMKS
from process_harness import GatewayProcess, gridpay

BANK = "01020000"
ZMK = ZMKS[BANK]
AS_ROOT = os.geteuid() == 0


def zmk_settings(tmp_path, mode: int, **environ):
    key_file = tmp_path / "bank.zmk"
    key_file.write_text(ZMK + "\n")
    key_file.chmod(mode)
    config = tmp_path / "gridpay.toml"
    config.write_text(f'[banks.{BANK}]\nzmk_file = "{key_file}"\n')
    return load_settings(config, environ=environ), key_file


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620, 0o660, 0o610, 0o666], ids=oct)
def test_a_zmk_file_others_may_use_is_refused(tmp_path, mode):
    settings, key_file = zmk_settings(tmp_path, mode)
    with pytest.raises(ConfigError) as info:
        settings.zmk(BANK)
    assert info.value.key == f"banks.{BANK}.zmk"
    assert f"{key_file} is too open (mode {mode:04o}" in info.value.problem
    assert 'key_file_permissions = "warn"' in info.value.problem


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700], ids=oct)
def test_a_zmk_file_for_its_owner_alone_is_read(tmp_path, mode):
    settings, _ = zmk_settings(tmp_path, mode)
    assert settings.zmk(BANK) == bytes.fromhex(ZMK)


def test_group_may_read_a_key_file_only_when_root_owns_it(tmp_path):
    settings, key_file = zmk_settings(tmp_path, 0o640)
    if AS_ROOT:  # root:group 0640, an administrator sharing the key with the service's group
        assert settings.zmk(BANK) == bytes.fromhex(ZMK)
        os.chown(key_file, 65534, -1)
    with pytest.raises(ConfigError, match="its group may read it and root does not own it"):
        settings.zmk(BANK)


def test_warn_uses_the_file_and_says_so_once(tmp_path, caplog):
    settings, key_file = zmk_settings(tmp_path, 0o644, GRIDPAY_KEY_FILE_PERMISSIONS="warn")
    assert settings.key_file_permissions == "warn"
    with caplog.at_level(logging.WARNING, logger="gridpay.config"):
        assert settings.zmk(BANK) == bytes.fromhex(ZMK)
        assert settings.zmk(BANK) == bytes.fromhex(ZMK)  # the gateway reads it again and again
    warnings = [r.getMessage() for r in caplog.records if r.name == "gridpay.config"]
    assert len(warnings) == 1 and f"{key_file} is too open (mode 0644" in warnings[0] and "used anyway" in warnings[0]


def test_an_unknown_policy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="key_file_permissions"):
        zmk_settings(tmp_path, 0o600, GRIDPAY_KEY_FILE_PERMISSIONS="ignore")


def serve(gw: GatewayProcess, **overrides: str) -> subprocess.CompletedProcess:
    """`gridpay serve` expected not to start."""
    return subprocess.run(gridpay("serve"), env={**gw.env, **overrides}, capture_output=True, text=True, timeout=120)


def test_serve_does_not_start_with_a_zmk_file_others_may_read(tmp_path, sqlite_url):
    from ledger import migrate

    migrate.upgrade(sqlite_url)
    key_file = tmp_path / "bank.zmk"
    key_file.write_text(ZMK)
    key_file.chmod(0o644)
    gw = GatewayProcess(tmp_path, sqlite_url, **{BANK: {"zmk_env": "", "zmk_file": str(key_file)}})
    refused = serve(gw)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"config error: banks.{BANK}.zmk: {key_file} is too open (mode 0644" in refused.stderr
    key_file.chmod(0o600)
    gw.start()  # the same gateway with the file its owner's alone
    assert gw.terminate() == 0


def test_serve_does_not_start_with_a_tls_key_others_may_read(tmp_path, sqlite_url):
    from ledger import migrate

    migrate.upgrade(sqlite_url)
    for name in ("gateway.crt", "gateway.key"):
        (tmp_path / name).write_text("not checked before the key file's mode\n")
    (tmp_path / "gateway.key").chmod(0o644)
    gw = GatewayProcess(tmp_path, sqlite_url)
    refused = serve(gw, GRIDPAY_GATEWAY__LISTENERS__0__TLS_CERT_FILE=str(tmp_path / "gateway.crt"),
                    GRIDPAY_GATEWAY__LISTENERS__0__TLS_KEY_FILE=str(tmp_path / "gateway.key"))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (f"config error: gateway.listeners.0.tls_key_file: {tmp_path / 'gateway.key'} is too open (mode 0644"
            in refused.stderr)


def test_the_counter_simulator_refuses_a_zmk_file_others_may_read(tmp_path):
    key_file = tmp_path / "bank.zmk"
    key_file.write_text(ZMK)
    key_file.chmod(0o604)
    run = subprocess.run(gridpay("sim", "counter", "--port", "9", "--bank", BANK, "--zmk-file", str(key_file),
                                 "--customers", str(key_file)), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and f"{key_file} is too open (mode 0604" in run.stderr, run.stdout + run.stderr


def test_the_demo_writes_its_keys_for_their_owner_alone(tmp_path):
    from gridpay.demo_command import write_site

    write_site(tmp_path, 15001, 15002, 9108)
    keys = sorted((tmp_path / "keys").iterdir())
    assert len(keys) == 2 and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    kept = keys[0].read_text()
    keys[0].chmod(0o644)  # a demo directory from before: its keys are kept, and made the owner's alone
    write_site(tmp_path, 15001, 15002, 9108)
    assert keys[0].read_text() == kept and keys[0].stat().st_mode & 0o777 == 0o600
    settings = load_settings(tmp_path / "gridpay.toml", environ={})
    assert len(settings.zmk(BANK)) == 16


def test_write_key_file_makes_an_existing_file_the_owners_alone(tmp_path):
    path = tmp_path / "k.pem"
    path.write_text("old")
    path.chmod(0o666)
    write_key_file(path, b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o600


def secret_settings(tmp_path, mode: int, **environ):
    """A configuration whose database password and SMS secret come from files of this mode."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(mode)
    config = tmp_path / "gridpay.toml"
    config.write_text(f'[database]\nurl = "postgresql+psycopg://gridpay@127.0.0.1/gridpay"\npassword_file = "{secret}"\n'
                      f'[notifier]\nsender = "http"\nhttp_url = "https://sms.example/send"\n'
                      f'http_secret_header = "Authorization"\nsecret_file = "{secret}"\n')
    return load_settings(config, environ=environ), secret


def test_a_database_password_file_others_may_read_is_refused(tmp_path):
    settings, secret = secret_settings(tmp_path, 0o644)
    with pytest.raises(ConfigError) as info:
        settings.database_url()
    assert info.value.key == "database.password" and f"{secret} is too open (mode 0644" in info.value.problem
    settings, _ = secret_settings(tmp_path, 0o600)
    assert settings.database_url() == "postgresql+psycopg://gridpay:s3cret@127.0.0.1/gridpay"


def test_an_sms_secret_file_others_may_read_is_refused_or_warned(tmp_path, caplog):
    from engines.sms import sender_from_config

    settings, secret = secret_settings(tmp_path, 0o604)
    with pytest.raises(ConfigError) as info:
        sender_from_config(settings.notifier, permissions=settings.key_file_permissions)
    assert info.value.key == "notifier.secret" and f"{secret} is too open (mode 0604" in info.value.problem
    settings, _ = secret_settings(tmp_path, 0o604, GRIDPAY_KEY_FILE_PERMISSIONS="warn")
    with caplog.at_level(logging.WARNING, logger="gridpay.config"):
        sender = sender_from_config(settings.notifier, permissions=settings.key_file_permissions)
    assert sender.headers["Authorization"].endswith("s3cret")
    assert any("used anyway" in r.getMessage() for r in caplog.records)

"""Every conformance vector through the API and the ``gridpay iso`` command."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from iso8583_specs import (check_value, decode, encode, encode_frame, get_dialect, read_sign_on_field48,
                           sign_on_field48, validate_request, validate_response, verify_mac)
from gridpay.iso_commands import iso
from iso8583_specs.keys import decrypt_key

VECTORS_FILE = Path(__file__).with_name("spec") / "vectors.json"
DATA = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
VECTORS = DATA["vectors"]
ZMK = bytes.fromhex(DATA["zmk"])
GRIDPAY = Path(sys.executable).with_name("gridpay")


def _id(vector):
    return f"{vector['dialect']}:{vector['name']}"


def _key(vector):
    return bytes.fromhex(vector["mac_key"]) if vector["mac_key"] else None


def _split(vector):
    dialect = get_dialect(vector["dialect"])
    frames = list(dialect.framer().feed(bytes.fromhex(vector["frame_hex"])))
    assert len(frames) == 1
    return dialect, frames[0]


@pytest.mark.parametrize("vector", VECTORS, ids=_id)
def test_vector_decodes_to_its_fields(vector):
    dialect, frame = _split(vector)
    message = decode(dialect, frame.message)
    assert message.mti == vector["mti"]
    assert message.fields == vector["fields"]


@pytest.mark.parametrize("vector", VECTORS, ids=_id)
def test_vector_reencodes_to_its_bytes(vector):
    dialect, frame = _split(vector)
    iso_bytes = encode(dialect, vector["mti"], vector["fields"], _key(vector))
    assert encode_frame(dialect.framing, iso_bytes, frame.tpdu).hex().upper() == vector["frame_hex"].upper()


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["mac_key"]], ids=_id)
def test_vector_mac_verifies(vector):
    dialect, frame = _split(vector)
    assert verify_mac(dialect, frame.message, _key(vector))
    assert not verify_mac(dialect, frame.message, bytes(16))


@pytest.mark.parametrize("vector", VECTORS, ids=_id)
def test_vector_follows_its_shape(vector):
    dialect, frame = _split(vector)
    message = decode(dialect, frame.message)
    if message.mti[2] in "13":
        validate_response(message)
    else:
        validate_request(message)


@pytest.mark.parametrize("vector", [v for v in VECTORS if "MK" in v["fields"].get("48", "")], ids=_id)
def test_sign_on_key_decrypts_under_zmk_to_its_check_value(vector):
    value = vector["fields"]["48"]
    mk, kv = value[5:37], value[42:48]
    mak = decrypt_key(ZMK, bytes.fromhex(mk))
    assert check_value(mak) == kv
    assert read_sign_on_field48(ZMK, value) == mak
    assert sign_on_field48(ZMK, mak) == value


# --- the command ---------------------------------------------------------------------------

def _decode_args(vector):
    key = ["--mac-key", vector["mac_key"]] if vector["mac_key"] else []
    return ["decode", "--dialect", vector["dialect"], *key]


def _expected_json(vector, tpdu):
    out = {"mti": vector["mti"], "fields": vector["fields"],
           "mac_valid": True if vector["mac_key"] else None}
    if tpdu is not None:
        out["tpdu"] = tpdu.hex().upper()
    return out


@pytest.mark.parametrize("vector", VECTORS, ids=_id)
def test_cli_decode(vector):
    result = CliRunner().invoke(iso, [*_decode_args(vector), vector["frame_hex"]])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == _expected_json(vector, _split(vector)[1].tpdu)


@pytest.mark.parametrize("vector", VECTORS, ids=_id)
def test_cli_encode(vector):
    fields = {k: v for k, v in vector["fields"].items() if k not in ("64", "128")} if vector["mac_key"] \
        else vector["fields"]
    args = ["encode", "--dialect", vector["dialect"]] + (["--mac-key", vector["mac_key"]] if vector["mac_key"] else [])
    result = CliRunner().invoke(iso, [*args, json.dumps({"mti": vector["mti"], "fields": fields})])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == vector["frame_hex"].upper()


def test_cli_refuses_a_tpdu_not_starting_60_both_ways():
    vector = next(v for v in VECTORS if v["dialect"] == "bcd" and v["mti"] == "0800")
    message = {"mti": "0800", "fields": vector["fields"], "tpdu": "6100010000"}
    encoded = CliRunner().invoke(iso, ["encode", "--dialect", "bcd", json.dumps(message)])
    assert encoded.exit_code == 1 and "tpdu: must be 60" in encoded.output
    frame = bytearray.fromhex(vector["frame_hex"])
    frame[2] = 0x61
    decoded = CliRunner().invoke(iso, ["decode", "--dialect", "bcd", frame.hex()])
    assert decoded.exit_code == 1 and json.loads(decoded.output)["error"] == "frame: TPDU starts 61, not 60"


def _run(*args, stdin=""):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([str(GRIDPAY), "iso", *args], input=stdin, capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=60)


@pytest.mark.parametrize("dialect", ["ascii", "bcd"])
def test_real_command_decodes_and_encodes_every_vector_line_by_line(dialect):
    vectors = [v for v in VECTORS if v["dialect"] == dialect]
    key = "89B07B35A1B3F47E4C7D2A0B91E3C5D7"
    decoded = _run("decode", "--dialect", dialect, "--mac-key", key,
                   stdin="".join(v["frame_hex"] + "\n" for v in vectors))
    assert decoded.returncode == 0, decoded.stderr
    lines = [json.loads(line) for line in decoded.stdout.splitlines()]
    assert [(d["mti"], d["fields"]) for d in lines] == [(v["mti"], v["fields"]) for v in vectors]
    assert [d["mac_valid"] for d in lines] == [v["mac_key"] == key for v in vectors]

    # Re-encode exactly what decode printed (MAC fields included, no key): the same frames.
    encoded = _run("encode", "--dialect", dialect, stdin=decoded.stdout)
    assert encoded.returncode == 0, encoded.stderr
    assert encoded.stdout.split() == [v["frame_hex"].upper() for v in vectors]


def test_real_command_reports_bad_lines_and_exits_1():
    good = VECTORS[0]["frame_hex"]
    bad_field4 = _letters_in_field4_frame()
    result = _run("decode", "--dialect", "ascii", stdin=f"{good}\nnot hex\n{bad_field4}\n{good}\n")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    assert lines[0]["mti"] == lines[3]["mti"] == "0800"
    assert lines[1]["field"] is None and "hex" in lines[1]["error"]
    assert lines[2] == {"error": "field 4: not numeric", "field": 4}


def test_real_command_help():
    for args in (["--help"], ["decode", "--help"], ["encode", "--help"]):
        result = _run(*args)
        assert result.returncode == 0 and "Usage:" in result.stdout


def _letters_in_field4_frame() -> str:
    vector = next(v for v in VECTORS if v["dialect"] == "ascii" and v["mti"] == "0200")
    frame = bytes.fromhex(vector["frame_hex"])
    return frame.replace(b"000000056216", b"0000000562AB", 1).hex().upper()

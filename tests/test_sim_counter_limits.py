"""`gridpay sim counter` ends and reports whatever the gateway does: a fake gateway on a real
socket that never answers, one that answers some requests and then falls silent, one that closes
its connections in the middle of the run. Each request has --timeout seconds for its answer; the
subprocess timeouts below only guard against a hang."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from iso8583_specs import codec
from iso8583_specs import keys as wire_keys
from iso8583_specs.dialects import get_dialect
from iso8583_specs.framing import encode_frame
from iso8583_specs.tlv import build_tlv

BANK = "01020000"
ZMK = "0123456789ABCDEFFEDCBA9876543210"
HANG_GUARD_S = 90


class FakeGateway:
    """Signs the bank on, answers ``answers`` inquiries (nothing due, so no payment follows),
    then stays silent, or with ``close=True`` closes every connection and stops listening."""

    def __init__(self, answers: int, close: bool = False, sign_on: bool = True):
        self.dialect = get_dialect("ascii")
        self.left = answers + (1 if sign_on else 0)
        self.close = close
        self.mak = wire_keys.generate_mak()
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        framer = self.dialect.framer(65535)
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            for frame in framer.feed(data):
                answer = self._answer(codec.decode(self.dialect, frame.message))
                if answer is not None:
                    conn.sendall(encode_frame(self.dialect.framing, answer))

    def _answer(self, request) -> bytes | None:
        with self.lock:
            if self.left <= 0:
                if self.close:
                    self.shut()
                return None
            self.left -= 1
        fields = {k: v for k, v in request.fields.items() if k in ("3", "7", "11", "12", "13", "32", "37")}
        fields["39"] = "00"
        if request.mti == "0800":
            fields["48"] = wire_keys.sign_on_field48(bytes.fromhex(ZMK), self.mak)
            return codec.encode(self.dialect, "0810", fields)
        customer = request.tlv.get("CN")
        fields.update({"4": "0" * 12, "48": build_tlv([("CN", customer), ("NM", "TEST"), ("BC", "0"),
                                                       ("PB", "0" * 12)])})
        return codec.encode(self.dialect, "0110", fields, mac_key=self.mak)

    def shut(self) -> None:
        self.server.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


def run_sim(tmp_path, port: int, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    customers = tmp_path / "customers.txt"
    customers.write_text("\n".join(f"C{n:09d}" for n in range(200)))
    args = [sys.executable, "-m", "gridpay", "sim", "counter", "--port", str(port), "--bank", BANK,
            "--zmk-env", "SIM_TEST_ZMK", "--customers", str(customers), "--json", "--timeout", "1", *extra]
    run = subprocess.run(args, env={**os.environ, "SIM_TEST_ZMK": ZMK}, capture_output=True, text=True,
                         timeout=HANG_GUARD_S)
    return run, json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def gateways():
    made: list[FakeGateway] = []

    def make(*args, **kwargs) -> FakeGateway:
        made.append(FakeGateway(*args, **kwargs))
        return made[-1]

    yield make
    for gateway in made:
        gateway.shut()


def test_a_gateway_that_never_answers_gets_the_sign_on_counted_unanswered(tmp_path, gateways):
    gateway = gateways(answers=0, sign_on=False)
    run, report = run_sim(tmp_path, gateway.port, "--count", "20", "--connections", "2")
    assert run.returncode == 1, run.stderr
    assert report["messages"] == 1 and report["unanswered"] == 1 and report["codes"] == {}
    assert report["payments"] == 0


def test_a_gateway_that_falls_silent_leaves_each_worker_one_request_unanswered(tmp_path, gateways):
    gateway = gateways(answers=6)
    run, report = run_sim(tmp_path, gateway.port, "--count", "100", "--connections", "2", "--window", "2")
    assert run.returncode == 1, run.stderr
    # the sign-on and 6 inquiries answered; then each of the 4 workers waits for one answer in vain
    assert report["codes"] == {"00": 7} and report["unanswered"] == 4 and report["messages"] == 11
    assert report["ops"] == {"pay": 10} and report["mismatches"] == 0
    assert report["connections_lost"] == 2  # closed by the simulator: stuck


def test_a_gateway_that_closes_mid_run_ends_the_run_even_between_requests(tmp_path, gateways):
    """With --rate most workers wait for their next slot, not for an answer, when the connections
    close: they must not send on a closed connection and wait for ever."""
    gateway = gateways(answers=6, close=True)
    run, report = run_sim(tmp_path, gateway.port, "--count", "100", "--connections", "2", "--window", "2",
                          "--rate", "40")
    assert run.returncode == 1, run.stderr
    assert report["codes"] == {"00": 7} and report["connections_lost"] == 2 and report["mismatches"] == 0
    assert report["messages"] == 7 + report["unanswered"] and report["unanswered"] <= 4

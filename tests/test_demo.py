"""The README's first command, as a new user runs it (without waiting at the end)."""
import signal
import socket
import subprocess
import sys

import psutil
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_starts_the_gateway_and_shows_it_working(tmp_path):
    ports = [str(free_port()) for _ in range(3)]
    out = subprocess.run([sys.executable, "-m", "gridpay", "demo", "--dir", str(tmp_path / "demo"), "--customers", "120",
                          "--ascii-port", ports[0], "--bcd-port", ports[1], "--metrics-port", ports[2], "--no-wait"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert text.count("answers matched what was sent") == 2  # both dialects, every answer checked
    assert "ledger verifies: OK" in text
    assert f"http://127.0.0.1:{ports[2]}/metrics" in text and "gateway.log" in text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_demo_stops_its_gateway_on_a_signal(tmp_path, sig):
    ports = [str(free_port()) for _ in range(3)]
    demo = subprocess.Popen([sys.executable, "-m", "gridpay", "demo", "--dir", str(tmp_path / "demo"), "--customers",
                             "60", "--ascii-port", ports[0], "--bcd-port", ports[1], "--metrics-port", ports[2]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if "stops the gateway" in line:
                break
        children = psutil.Process(demo.pid).children(recursive=True)
        assert children, "".join(seen)
        if sig == signal.SIGTERM:  # while it serves, the demo site is a healthy site
            status = subprocess.run([sys.executable, "-m", "gridpay", "status", "--config",
                                     str(tmp_path / "demo" / "gridpay.toml")], capture_output=True, text=True, timeout=120)
            assert status.returncode == 0 and "all well" in status.stdout, status.stdout + status.stderr
        demo.send_signal(sig)
        assert demo.wait(timeout=60) == 0, "".join(seen)
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"left running after {sig.name}: {[p.cmdline() for p in alive]}"
        with socket.socket() as s:
            s.bind(("127.0.0.1", int(ports[0])))  # the gateway's port is free again
    finally:
        if demo.poll() is None:
            demo.kill()

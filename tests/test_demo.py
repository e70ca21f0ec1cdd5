"""The README's first command, as a new user runs it (without waiting at the end)."""
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_starts_the_gateway_and_shows_it_working(tmp_path):
    ports = [str(free_port()) for _ in range(3)]
    out = subprocess.run([sys.executable, "-m", "gateway", "demo", "--dir", str(tmp_path / "demo"), "--customers", "120",
                          "--ascii-port", ports[0], "--bcd-port", ports[1], "--metrics-port", ports[2], "--no-wait"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert text.count("answers matched what was sent") == 2  # both dialects, every answer checked
    assert "ledger verifies: OK" in text
    assert f"http://127.0.0.1:{ports[2]}/metrics" in text and "gateway.log" in text

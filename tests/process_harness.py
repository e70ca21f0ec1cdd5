"""``gridpay serve`` as a real child process, configured through the environment (GRIDPAY_* variables)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from config.settings import environment_for
from gateway_harness import ZMKS, settings_tree

SERVING = re.compile(r"gridpay serving: (?P<ports>.*) metrics=http://[^:]+:(?P<metrics>\d+)/metrics")




def gridpay(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridpay", *args]


class GatewayProcess:
    def __init__(self, tmp_path: Path, db_url: str, **bank_overrides):
        tree = settings_tree(db_url, **bank_overrides)
        tree["gateway"]["log_file"] = str(tmp_path / "gateway.log")
        self.env = {**os.environ, **environment_for(tree), **{f"GRIDPAY_TEST_ZMK_{b}": z for b, z in ZMKS.items()}}
        self.log = tmp_path / "gateway.log"
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.metrics_port = 0

    def start(self, own_group: bool = False) -> "GatewayProcess":
        """own_group: in a process group of its own, as a terminal's foreground job is."""
        self.proc = subprocess.Popen(gridpay("serve"), env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=own_group)
        for line in self.proc.stdout:
            match = SERVING.search(line)
            if match:
                self.ports = {k: int(v) for k, v in (p.split("=") for p in match["ports"].split(", "))}
                self.metrics_port = int(match["metrics"])
                return self
        raise RuntimeError(f"gateway did not start (exit {self.proc.wait()})")

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def interrupt_group(self, timeout: float = 60) -> int:
        """Ctrl-C in the terminal: SIGINT to every process of the group, the workers included."""
        os.killpg(os.getpgid(self.proc.pid), signal.SIGINT)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def sim(self, listener: str, bank: str, dialect: str, customers_file: Path, receipts: Path, *extra: str,
            background: bool = False):
        args = gridpay("sim", "counter", "--port", str(self.ports[listener]), "--bank", bank, "--dialect", dialect,
                       "--zmk-env", f"GRIDPAY_TEST_ZMK_{bank}", "--customers", str(customers_file),
                       "--receipts", str(receipts), "--json", *extra)
        if background:
            return subprocess.Popen(args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=300)

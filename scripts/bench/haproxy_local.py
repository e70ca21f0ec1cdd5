"""The production HAProxy configurations (config/haproxy/) made runnable on this machine for the
benches: the same frontends, backends, balancing, timeouts and health checks, with

- the frontends' binds on 127.0.0.1 and ports given by the bench (frontends it does not name are left out,
  and so are the backends no frontend kept uses);
- the servers of each backend replaced by the bench's processes (address, and the port of their health check);
- what needs the production hosts left out: the user, group, daemon and admin socket of ``global``, its
  syslog target, the banks' network lists (files under /etc), and TLS (certificates, CA files);
- ``maxconn`` of ``global`` lowered to what this host's open-file limit allows (HAProxy needs two
  descriptors a connection and refuses to start otherwise).

So a bench runs the production file, not a hand-written twin of it: a change there is measured here.
HAProxy runs in the foreground (``-db``) as a child of the bench.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COUNTER_CFG = ROOT / "config" / "haproxy" / "gridpay.cfg"
API_CFG = ROOT / "config" / "haproxy" / "gridpay-api.cfg"

_GLOBAL_DROP = re.compile(r"^\s*(user|group|daemon|stats socket|log\s|ssl-default-)")
_SECTION_DROP = re.compile(r"^\s*(acl \S+ src -f |tcp-request connection reject unless |log global)")
_TLS_WORDS = re.compile(r"\s+(ssl|verify \S+|ca-file \S+|crt \S+|alpn \S+)(?=\s|$)")


@dataclass
class Server:
    name: str
    address: str              # host:port
    check_port: int | None = None


def local_config(text: str, binds: dict[str, int], servers: dict[str, list[Server]]) -> str:
    """``text`` (a production configuration) with ``binds`` {frontend: port} and ``servers``
    {backend: [Server]}; see the module's docstring."""
    import resource

    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    max_conn = (fd_limit - 200) // 2 if fd_limit != resource.RLIM_INFINITY else None
    sections = _sections(text)
    kept_backends = set()
    for head, body in sections:
        kind, _, name = head.partition(" ")
        if kind == "frontend" and name in binds:
            kept_backends |= {ln.split()[1] for ln in body if ln.strip().startswith("default_backend")}
    out = []
    for head, body in sections:
        kind, _, name = head.partition(" ")
        if kind == "frontend" and name not in binds or kind == "backend" and name not in kept_backends:
            continue
        lines = [head] if head else []
        for ln in body:
            if kind == "global" and _GLOBAL_DROP.match(ln) or _SECTION_DROP.match(ln):
                continue
            stripped = ln.strip()
            if kind == "global" and stripped.startswith("maxconn ") and max_conn is not None:
                ln = f"    maxconn {min(int(stripped.split()[1]), max_conn)}"
            elif stripped.startswith("bind "):
                ln = f"    bind 127.0.0.1:{binds[name]}"
            elif stripped.startswith("server "):
                continue
            lines.append(_TLS_WORDS.sub("", ln))
        if kind == "backend":
            if name not in servers:
                raise ValueError(f"no servers given for backend {name}")
            lines += [f"    server {s.name} {s.address}" + (f" check port {s.check_port}" if s.check_port else " check")
                      for s in servers[name]]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """(header line, body lines) of each section; comments and blank lines dropped."""
    sections: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            sections.append((line.strip(), []))
        elif sections:
            sections[-1][1].append(line)
    return sections


def executable() -> str | None:
    """HAProxy's path: on PATH, or where Debian installs it (/usr/sbin is not on every PATH)."""
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)


def installed() -> bool:
    return executable() is not None


def start(config: str, workdir: Path, name: str = "haproxy") -> subprocess.Popen:
    """HAProxy in the foreground on ``config`` (checked first with ``-c``), its output in workdir."""
    exe = executable()
    path = workdir / f"{name}.cfg"
    path.write_text(config)
    check = subprocess.run([exe, "-c", "-f", str(path)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"{path}: haproxy -c failed: {check.stdout}{check.stderr}")
    return subprocess.Popen([exe, "-db", "-f", str(path)], stdout=open(workdir / f"{name}.out", "wb"),
                            stderr=open(workdir / f"{name}.err", "wb"), start_new_session=True)


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    import socket

    end = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"haproxy is not listening on {port} (exit {proc.poll()}): see its .err file") from None
            time.sleep(0.1)

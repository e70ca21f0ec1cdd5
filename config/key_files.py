"""Key files must be the service's alone: a bank's ZMK (``banks.<code>.zmk_file``), a TLS
listener's private key (``gateway.listeners[N].tls_key_file``), the database's password file
(``database.password_file``) and the SMS gateway's secret (``notifier.secret_file``).

As ssh refuses a private key that others can read, and PostgreSQL its ``ssl_key_file``, a key
file is *too open* when others (not its owner, not its group) may do anything with it, when its
group may write or execute it, or when its group may read it and root does not own it. So
``0600``/``0400`` are fine whoever owns the file, and ``0640``/``0440`` too when root owns it
(an administrator sharing it with the service's group). ``key_file_permissions`` says what a
too open file gets: ``refuse`` (the default: a configuration error naming the key, the path and
the mode) or ``warn`` (one warning per file and mode in the process's log, then it is used).
The mode is taken from the file as opened, so what is judged is what is read.
"""
from __future__ import annotations

import logging
import os
import stat

from config.errors import ConfigError

log = logging.getLogger("gridpay.config")
_warned: set[tuple[str, int, int]] = set()


def too_open(st: os.stat_result) -> str | None:
    """Why a file with this status is too open for a key, or None."""
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        return "others may use it"
    if mode & 0o030:
        return "its group may write or execute it"
    if mode & 0o040 and st.st_uid != 0:
        return "its group may read it and root does not own it"
    return None


def read_key_file(key: str, path: str, policy: str) -> str:
    """The file's text, once its permissions pass ``policy`` (``refuse`` or ``warn``)."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            judge(key, path, os.fstat(fh.fileno()), policy)
            return fh.read()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None


def check_key_file(key: str, path: str, policy: str) -> None:
    """The permissions of a key file another module reads (the TLS private key)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    judge(key, path, st, policy)


def judge(key: str, path: str, st: os.stat_result, policy: str) -> None:
    why = too_open(st)
    if why is None:
        return
    mode = stat.S_IMODE(st.st_mode)
    problem = (f"{path} is too open (mode {mode:04o}, owner uid {st.st_uid}): {why}; "
               f"chmod 600 it (640 if root owns it and shares it with the service's group)")
    if policy != "warn":
        raise ConfigError(key, f'{problem}, or set key_file_permissions = "warn"')
    if (path, mode, st.st_uid) not in _warned:
        _warned.add((path, mode, st.st_uid))
        log.warning('%s: %s; used anyway (key_file_permissions = "warn")', key, problem)


def check_key_files(settings) -> None:
    """At a gateway's start: the counter banks' ZMK files read (their permissions, their content)
    and every TLS private key's permissions checked, so a refused or broken key file stops the start-up
    instead of failing the first sign-on."""
    for code, bank in settings.banks.items():
        if bank.zmk_file and "counter" in bank.channels:
            settings.zmk(code)
    for n, listener in enumerate(settings.gateway.listeners):
        if listener.tls_key_file:
            check_key_file(f"gateway.listeners.{n}.tls_key_file", listener.tls_key_file,
                           settings.key_file_permissions)


def write_key_file(path: os.PathLike | str, data: str | bytes) -> None:
    """Write a key file readable and writable by its owner alone (0600) from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, 0o600)  # a file that was there keeps its mode through O_CREAT
        fh.write(data.encode("ascii") if isinstance(data, str) else data)

"""``gridpay ops-kit DIR``: write the deployment kit that ships inside the package to a folder.

The kit is the ``config`` package's data, laid out as in the source tree's ``config/``:

- ``gridpay.example.toml`` (a development machine) and ``site.example.toml`` (a production site);
- ``systemd/``: the units and ``gridpay.target``;
- ``prometheus/``: the scrape configuration and the alerting rules;
- ``grafana/``: the dashboard;
- ``haproxy/``: the load balancer's configuration.

So ``gridpay ops-kit config`` gives an installed host the same ``config/...`` paths that
docs/runbook.md's commands name. Existing files are never overwritten without ``--force``.
"""
from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import click

# subfolder of the kit (and of the package) -> the file names it takes
KINDS: dict[str, tuple[str, ...]] = {
    "": (".toml",),
    "systemd": (".service", ".target"),
    "prometheus": (".yml",),
    "grafana": (".json",),
    "haproxy": (".cfg",),
}


def kit_files() -> list[tuple[str, Traversable]]:
    """(relative path in the kit, the packaged file), for every file of the kit, sorted."""
    root = resources.files("config")
    files = []
    for kind, suffixes in KINDS.items():
        folder = root.joinpath(kind) if kind else root
        for entry in folder.iterdir():
            if entry.is_file() and entry.name.endswith(suffixes):
                files.append((f"{kind}/{entry.name}" if kind else entry.name, entry))
    return sorted(files, key=lambda item: item[0])


def write_kit(target: Path, force: bool = False) -> list[Path]:
    """Write the kit into ``target``; refuse (``FileExistsError``, naming them) when any of its files
    exists already, unless ``force``. Nothing is written when refused. Returns the written paths."""
    files = [(target / rel, source) for rel, source in kit_files()]
    if not force:
        existing = [str(path) for path, _ in files if path.exists()]
        if existing:
            raise FileExistsError(existing)
    written = []
    for path, source in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source.read_bytes())
        written.append(path)
    return written


@click.command("ops-kit")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="overwrite files of the kit that exist in DIRECTORY")
def ops_kit(directory: Path, force: bool) -> None:
    """Write the ops kit (example configurations, systemd units, Prometheus config and alert rules,
    Grafana dashboard, HAProxy example) into DIRECTORY, one subfolder per kind, laid out as the
    source tree's config/ (so `gridpay ops-kit config` matches docs/runbook.md's paths)."""
    try:
        written = write_kit(directory, force)
    except FileExistsError as exc:
        names = exc.args[0]
        raise click.ClickException(
            f"{len(names)} file(s) of the kit exist already, nothing written (--force overwrites): "
            + ", ".join(names))
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"{len(written)} files; installing them: docs/runbook.md, \"Installing\" and \"Ops kit\"")

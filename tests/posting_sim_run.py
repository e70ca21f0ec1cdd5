"""Running the posting simulation over many seeds: a fresh database per seed, a summary, replay commands.

    .venv/bin/python -m scripts.simulate_postings --seeds 500 --steps 50 [--db sqlite|pg] [--first 0]
    .venv/bin/python -m scripts.simulate_postings --seed 17 --steps 50 --verbose     # replay one seed

Each seed starts from an empty migrated database: on SQLite a copy of a template file migrated
once; on PostgreSQL one schema of its own, migrated once and emptied (``TRUNCATE ... RESTART
IDENTITY``: ids, hence receipt numbers, start again at 1) before each seed. PostgreSQL's URL:
--pg-url, else GRIDPAY_TEST_PG_URL, else the local test server.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

from ledger import migrate
from ledger.schema import metadata
from posting_sim import Simulation

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class SqliteDatabases:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="gridpay-sim-"))
        self.template = self.dir / "template.db"
        migrate.upgrade(f"sqlite:///{self.template}")
        engine = create_engine(f"sqlite:///{self.template}")
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()

    def fresh(self, seed: int) -> str:
        for old in self.dir.glob("seed.db*"):
            old.unlink()
        shutil.copyfile(self.template, self.dir / "seed.db")
        return f"sqlite:///{self.dir / 'seed.db'}"

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class PgDatabases:
    def __init__(self, server_url: str):
        self.admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        self.schema = f"gp_sim_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'create schema "{self.schema}"'))
        self.url = f"{server_url}{'&' if '?' in server_url else '?'}options=-csearch_path%3D{self.schema}"
        migrate.upgrade(self.url)
        tables = ", ".join(f'"{self.schema}"."{t.name}"' for t in metadata.sorted_tables)
        self.truncate = f"TRUNCATE {tables} RESTART IDENTITY CASCADE"

    def fresh(self, seed: int) -> str:
        with self.admin.connect() as conn:
            conn.execute(text(self.truncate))
            # the billing feed's one counter row, as migration 0009 leaves it on an empty ledger
            conn.execute(text(f'INSERT INTO "{self.schema}".billing_feed_counter (id, last_seq, from_payment_id, '
                              'from_reversal_id, from_movement_id) VALUES (1, 0, 0, 0, 0)'))
        return self.url

    def close(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'drop schema "{self.schema}" cascade'))
        self.admin.dispose()


def databases(db: str, pg_url: str | None = None):
    if db == "sqlite":
        return SqliteDatabases()
    return PgDatabases(pg_url or os.environ.get("GRIDPAY_TEST_PG_URL") or DEFAULT_PG)


@dataclass
class Report:
    seeds: int = 0
    steps: int = 0
    stats: Counter = field(default_factory=Counter)
    failures: list[tuple[int, list[str]]] = field(default_factory=list)
    seconds: float = 0.0


def run_seed(dbs, seed: int, steps: int, verbose: bool = False, close_today: bool = False) -> Simulation:
    sim = Simulation(seed, dbs.fresh(seed), verbose=verbose, close_today=close_today)
    sim.problems = sim.run(steps)
    return sim


def run(db: str, seeds, steps: int, pg_url: str | None = None, verbose: bool = False,
        progress=None, close_today: bool = False) -> Report:
    report = Report()
    started = time.monotonic()
    dbs = databases(db, pg_url)
    try:
        for seed in seeds:
            sim = run_seed(dbs, seed, steps, verbose, close_today)
            report.seeds += 1
            report.steps += sim.steps
            report.stats.update(sim.stats)
            if sim.problems:
                report.failures.append((seed, sim.problems))
            if progress:
                progress(seed, sim)
    finally:
        dbs.close()
    report.seconds = time.monotonic() - started
    return report


def replay_command(db: str, seed: int, steps: int, close_today: bool = False) -> str:
    return (f".venv/bin/python -m scripts.simulate_postings --db {db} --seed {seed} --steps {steps} --verbose"
            + (" --close-today" if close_today else ""))


def summary(report: Report, db: str, steps: int, close_today: bool = False) -> str:
    lines = [f"posting simulation on {db}: {report.seeds} seeds, {report.steps} steps "
             f"({report.stats.total() and sum(v for k, v in report.stats.items() if k.startswith('request '))} "
             f"requests) in {report.seconds:.0f} s"]
    groups = (("steps", "step "), ("faults injected (where they struck)", "fault "), ("requests", "request "),
              ("answers", "answer "), ("also", ""))
    for title, prefix in groups:
        items = sorted((k[len(prefix):], v) for k, v in report.stats.items()
                       if k.startswith(prefix) and (prefix or not any(k.startswith(p) for _, p in groups[:-1])))
        if items:
            lines.append(f"{title}: " + ", ".join(f"{k} {v}" for k, v in items))
    lines.append(f"failures: {len(report.failures)}")
    for seed, problems in report.failures:
        lines.append(f"  seed {seed}: {problems[0]}")
        lines += [f"    {p}" for p in problems[1:6]]
        lines.append(f"    replay: {replay_command(db, seed, steps, close_today)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.simulate_postings",
                                     description="Seeded fault simulation of the posting path (docs/ledger.md).")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds (from --first)")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, help="run this one seed only")
    parser.add_argument("--steps", type=int, default=50, help="steps per seed")
    parser.add_argument("--db", choices=("sqlite", "pg"), default="sqlite")
    parser.add_argument("--pg-url", help=f"PostgreSQL server (default $GRIDPAY_TEST_PG_URL or {DEFAULT_PG})")
    parser.add_argument("--verbose", action="store_true", help="print every step, request and answer")
    parser.add_argument("--close-today", action="store_true",
                        help="reconciliation may close the current business date too (it never does: the "
                             "bank's file comes after the date has ended)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)   # the faults make the ledger (and psycopg) log loudly, by design
    logging.getLogger("psycopg").setLevel(logging.CRITICAL)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)

    def progress(seed, sim):
        if not args.verbose and (seed + 1) % 50 == 0:
            print(f"... seed {seed}", file=sys.stderr, flush=True)

    report = run(args.db, seeds, args.steps, args.pg_url, args.verbose, progress, args.close_today)
    print(summary(report, args.db, args.steps, args.close_today))
    return 1 if report.failures else 0

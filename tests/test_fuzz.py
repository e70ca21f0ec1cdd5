"""The wire layer's fuzz targets (scripts/fuzz/targets.py): the seeds and every past finding replayed,
and a short coverage-guided run of each target (docs/testing.md has the longer one)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.fuzz.seeds import seeds
from scripts.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]
REGRESSIONS = Path(__file__).with_name("fuzz_regressions")
SHORT_RUNS = 3000
HANG_GUARD_S = 300  # a run that never ends fails instead of holding the suite


def regression_inputs():
    return sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file() and p.parent.name in TARGETS)


@pytest.mark.parametrize("path", regression_inputs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_past_finding_passes_its_target(path):
    TARGETS[path.parent.name](path.read_bytes())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_seed_corpus_passes(target):
    found = seeds(target)
    assert found
    for seed in found:
        TARGETS[target](seed)


def test_every_target_has_a_regression_directory():
    assert {p.name for p in REGRESSIONS.iterdir() if p.is_dir()} == set(TARGETS)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_coverage_guided_run_finds_nothing(target, tmp_path):
    pytest.importorskip("atheris", reason="atheris has wheels for Linux x86-64 only (setup.cfg's test extra)")
    # atheris takes over the process it runs in, so it runs in its own
    run = subprocess.run([sys.executable, "-m", "scripts.fuzz", target, "--runs", str(SHORT_RUNS), "--seed", "1",
                          "--corpus", str(tmp_path / "corpus"), "--artifacts", str(tmp_path / "findings")],
                         cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S)
    report = "\n".join(line for line in run.stderr.splitlines() if not line.startswith("INFO: Instrumenting"))
    assert run.returncode == 0, report[-4000:]
    # libFuzzer checks -runs between its steps, so it may run a few units past it (3,005 once in CI)
    executed = re.search(r"stat::number_of_executed_units: *(\d+)", report)
    assert executed and int(executed.group(1)) >= SHORT_RUNS, report[-4000:]
    assert not list((tmp_path / "findings").glob("crash-*"))

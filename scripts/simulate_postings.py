"""The seeded fault simulation of the posting path (tests/posting_sim.py; docs/ledger.md, "Fault simulation").

    .venv/bin/python -m scripts.simulate_postings --seeds 500 --steps 50 [--db sqlite|pg]
    .venv/bin/python -m scripts.simulate_postings --seed 17 --steps 50 --verbose   # replay one seed

Prints the seeds and steps run, the faults injected by kind, the requests and answers, and each
failing seed with the command that replays it. Exit status 1 when a check failed.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "tests"):   # the simulation lives with the tests and their helpers
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from posting_sim_run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

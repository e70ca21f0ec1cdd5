"""python -m scripts.fuzz TARGET [--runs N | --seconds S] [--corpus DIR] [--artifacts DIR] [--seed N]
python -m scripts.fuzz TARGET --replay FILE...

Coverage-guided fuzzing (atheris over libFuzzer) of one wire-layer target, ``framer``, ``decoder``
or ``tlv`` (scripts/fuzz/targets.py), from the conformance vectors as seed corpus. pyiso8583 and
the wire layer are instrumented, so libFuzzer keeps the inputs that reach new code. A finding
stops the run with the input saved as ``crash-*`` in the artifacts directory (exit status 1);
docs/testing.md says how it becomes a regression test. ``--replay`` runs saved inputs through
the target without the fuzzer and shows what each does.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.fuzz.seeds import write_seeds

TARGET_NAMES = ("framer", "decoder", "tlv")
INSTRUMENTED = ["iso8583", "iso8583_specs", "scripts.fuzz.targets"]
INPUT_TIMEOUT_S = 10  # one input taking longer is a hang, and a finding


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.fuzz", description=__doc__.split("\n\n")[1])
    parser.add_argument("target", choices=TARGET_NAMES)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--runs", type=int, help="stop after this many executions")
    budget.add_argument("--seconds", type=int, help="stop after this long")
    parser.add_argument("--corpus", type=Path, help="corpus directory, kept and grown across runs "
                        "(default var/fuzz/TARGET/corpus); the seeds are written into it first")
    parser.add_argument("--artifacts", type=Path, help="where findings go (default var/fuzz/TARGET)")
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer's random seed (0: a new one each run)")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="FILE",
                        help="run these inputs through the target, without fuzzing")
    return parser.parse_args(argv)


def replay(target: str, paths: list[Path]) -> int:
    """Each input through the target: ``ok`` or its traceback; the number that failed."""
    import traceback

    from scripts.fuzz.targets import TARGETS
    failed = 0
    for path in paths:
        try:
            TARGETS[target](path.read_bytes())
        except Exception:  # noqa: BLE001 - a finding, whatever it raised
            failed += 1
            print(f"{path}: FAILS\n{traceback.format_exc()}")
        else:
            print(f"{path}: ok")
    return failed


def libfuzzer_args(args: argparse.Namespace, corpus: Path, artifacts: Path) -> list[str]:
    flags = [sys.argv[0], str(corpus), f"-artifact_prefix={artifacts}/", f"-seed={args.seed}",
             "-max_len=4096", f"-timeout={INPUT_TIMEOUT_S}", "-print_final_stats=1"]
    if args.runs is not None:
        flags.append(f"-runs={args.runs}")
    if args.seconds is not None:
        flags.append(f"-max_total_time={args.seconds}")
    return flags


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.replay:
        sys.exit(1 if replay(args.target, args.replay) else 0)
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install -e '.[test]' (wheels for Linux x86-64 only)")
    with atheris.instrument_imports(include=INSTRUMENTED):
        from scripts.fuzz import targets
    workdir = Path("var") / "fuzz" / args.target
    corpus = args.corpus or workdir / "corpus"
    artifacts = args.artifacts or workdir
    artifacts.mkdir(parents=True, exist_ok=True)
    seeded = write_seeds(args.target, corpus)
    print(f"fuzz {args.target}: {seeded} seeds in {corpus}, findings go to {artifacts}", file=sys.stderr)
    atheris.Setup(libfuzzer_args(args, corpus, artifacts), targets.TARGETS[args.target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()

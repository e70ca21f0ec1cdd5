"""The repository stands on its own: the bank contract lives in it, and nothing names a path outside it.

The contract (docs/spec/INTERFACE.md, docs/spec/BILLING-FILES.md) and its conformance vectors
(tests/spec/vectors.json) are the published documents, copied. Where the published folder sits
beside a developer's checkout (``shared/spec`` next to the repository, or GRIDPAY_PUBLISHED_SPEC),
the copies must be identical to it; a plain clone has no such folder and the comparison skips.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COPIES = {
    "INTERFACE.md": ROOT / "docs" / "spec" / "INTERFACE.md",
    "BILLING-FILES.md": ROOT / "docs" / "spec" / "BILLING-FILES.md",
    "vectors.json": ROOT / "tests" / "spec" / "vectors.json",
}


def published_folder() -> Path:
    # The one place a path outside the repository is named: the published contract, when present.
    return Path(os.environ.get("GRIDPAY_PUBLISHED_SPEC") or ROOT.parent.joinpath("shared", "spec"))


@pytest.mark.parametrize("name", sorted(COPIES))
def test_the_repository_copy_is_the_published_document(name):
    published = published_folder() / name
    if not published.is_file():
        pytest.skip(f"no published copy at {published} (a plain clone has none; "
                    "set GRIDPAY_PUBLISHED_SPEC to compare with another folder)")
    assert COPIES[name].read_bytes() == published.read_bytes(), \
        f"{COPIES[name].relative_to(ROOT)} differs from the published {published}: copy the published version"


def test_the_contract_copies_are_version_1_1():
    assert COPIES["INTERFACE.md"].read_text(encoding="utf-8").splitlines()[2].startswith("Version 1.1")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if out.returncode != 0:
        pytest.skip("not a git checkout: cannot list the tracked files")
    return [ROOT / name for name in out.stdout.decode().split("\0") if name]


OUTSIDE = re.compile(r"\.\./shared|(?<![\w.])/(?:work|root|home|Users)/")


def test_no_file_names_a_path_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                      for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not offenders, "paths outside the repository:\n" + "\n".join(offenders)


SECTION_REF = re.compile(r"\b(INTERFACE\.md|INTERFACE(?= §)|BILLING-FILES\.md)")


def test_contract_references_name_the_repository_copies():
    """A § reference in code, help or docs names docs/spec/..., so a reader finds the text."""
    offenders = []
    for path in tracked_files():
        if path.suffix not in {".py", ".md", ".toml", ".yml", ".cfg"} or not path.is_file():
            continue
        if path.parent == ROOT / "docs" / "spec" or path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in SECTION_REF.finditer(line):
                if not line[:match.start()].endswith("docs/spec/"):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "contract references without docs/spec/:\n" + "\n".join(offenders)


def test_every_file_with_section_references_names_the_document_they_refer_to():
    """'§7.1' alone does not say which document; each file that uses it names docs/spec/INTERFACE.md."""
    offenders = []
    for path in tracked_files():
        if path.suffix not in {".py", ".md", ".toml", ".yml"} or path.parent == ROOT / "docs" / "spec":
            continue
        text = path.read_text(encoding="utf-8")
        if "§" in text and "docs/spec/INTERFACE.md" not in text and "docs/spec/BILLING-FILES.md" not in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, "§ references without the document they refer to: " + ", ".join(offenders)

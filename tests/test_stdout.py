"""Commands that print a JSON summary keep stdout for it alone, whatever their child processes print."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import subprocess, sys
from pipelines.stdout import summary_stdout
print("before")
with summary_stdout() as out:
    print("driver noise")
    subprocess.run([sys.executable, "-c", "print('child noise')"], check=True)
    print('{"status": "published"}', file=out)
print("after")
"""


def test_only_the_summary_reaches_stdout():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == ["before", '{"status": "published"}', "after"]
    assert json.loads(lines[1]) == {"status": "published"}
    assert "driver noise" in result.stderr and "child noise" in result.stderr

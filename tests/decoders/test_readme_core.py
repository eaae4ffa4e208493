"""The README's core example must run (so it cannot rot)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def core_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("<!-- BEGIN core -->"):text.index("<!-- END core -->")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README core section must contain a ```python example"
    return blocks[0]


def test_readme_core_example_runs():
    out = subprocess.run([sys.executable, "-c", core_example()], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                                      "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("log Z = ") and lines[-1].startswith("SMC: mean R")
    log_z = lines[0].split()[3]
    assert all(line.endswith(f"log_w={log_z}") for line in lines[1:4])  # exact Q: log_w = log Z

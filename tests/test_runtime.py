"""Process-wide runtime settings: thread counts and the allocator (cdrec.runtime).

Each check runs in a fresh interpreter, because both settings are per process and torch fixes
its inter-op pool once set.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": ""})


# How much the resident set shrinks when a freshly written 16 MB tensor is freed.
_RSS_DROP = """
import sys, torch
from cdrec.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
x = torch.ones(4_000_000)
before = rss()
del x
print(before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_keeps_a_freed_tensor_for_reuse() -> None:
    default = _python(_RSS_DROP, "default")
    kept = _python(_RSS_DROP, "keep")
    assert default.returncode == 0 and kept.returncode == 0, default.stderr + kept.stderr
    # glibc's default hands the 16 MB block back to the kernel (munmap) ...
    assert int(default.stdout) > 12_000_000
    # ... with the setting, it stays in the process for the next step's tensors.
    assert int(kept.stdout) < 1_000_000


def test_set_threads_applies_both_counts() -> None:
    out = _python("import torch\nfrom cdrec.runtime import set_threads\nset_threads(1, 3)\n"
                  "print(torch.get_num_threads(), torch.get_num_interop_threads())")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "3"]

"""appliance/memtrim.py: what a burst freed inside glibc's heaps goes back to the system
after the next look, once; a process that grew without freeing, or did not grow, is
left alone. In a child interpreter, so that the test's own heap is not the one measured."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from appliance import memtrim

CHILD = r"""
import json
from appliance import memtrim

libc = memtrim._libc()
trimmer = memtrim.Trimmer(libc)
out = {"idle": trimmer.check()}
# growth that frees nothing: no trim
grown_kept = [bytes(4000) for _ in range(5000)]
out["kept_growth"] = trimmer.check()
# ~60 MiB from the heap (4 kB each: above pymalloc's 512 bytes, below the mmap threshold),
# then a few blocks above them kept, so that freeing the rest leaves no free top to shrink
burst = [bytes(4000) for _ in range(15000)]
kept = [bytes(4000) for _ in range(8)]
grown = memtrim.resident_bytes()
del burst
out["freed_resident_mib"] = (memtrim.resident_bytes() - trimmer.baseline) / 2**20
out["first"] = trimmer.check()
out["after_mib"] = (grown - memtrim.resident_bytes()) / 2**20
out["second"] = trimmer.check()
print(json.dumps(out))
"""


@pytest.mark.skipif(memtrim._libc() is None, reason="not glibc >= 2.33 (no malloc_trim/mallinfo2)")
def test_a_burst_freed_is_given_back_once():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60,
                          check=True)
    out = json.loads(done.stdout)
    assert out["idle"] is False  # nothing grew: not even a look at the heaps
    assert out["freed_resident_mib"] > 40  # freed, still resident
    assert out["first"] is True and out["after_mib"] > 40, out  # given back
    assert out["second"] is False  # and not trimmed again without a new burst
    assert out["kept_growth"] is False, out  # grown, but nothing free to give back

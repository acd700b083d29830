"""Process settings for the `auditor` command, which is short-lived and imports torch and transformers.

Those imports leave about 550,000 long-lived objects on the heap. With CPython's default
thresholds (700, 10, 10) the cyclic collector runs thousands of young collections and several
full ones while they load, each full one walking the whole growing heap, and then the
interpreter's shutdown collects it all again: measured here, 0.6 s during the imports and 0.9 s
at exit of a 3.9 s preflight (docs/benchmarks.md). Reference counting frees almost all of that
garbage anyway; the collector only has cycles to find.

Only the command line calls this. A library user's training process keeps its own settings.
"""
from __future__ import annotations

import atexit
import gc

# Young collections every 100k allocations instead of 700: cycles are still found, a few hundred
# times less often. Full collections stay bounded by CPython's own rule (only when the long-lived
# heap has grown by a quarter since the last one).
THRESHOLDS = (100_000, 20, 100)


def tune_for_command_line() -> None:
    gc.set_threshold(*THRESHOLDS)
    # Objects alive at exit go to the permanent generation, so shutdown does not walk them
    # again. Their memory is the operating system's a moment later.
    atexit.register(gc.freeze)

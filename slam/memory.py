"""Peak resident memory of this process, per run.

``slam eval`` runs many sequences in one process; ``getrusage``'s ``ru_maxrss``
is the lifetime maximum, so each later run would report the largest earlier
peak.  On Linux the high-water mark can be reset (``/proc/self/clear_refs``,
value 5, Linux >= 4.0); :func:`reset_peak_rss` does so at the start of a run
and :func:`peak_rss_mb` then reads that run's own peak (``VmHWM``).
"""
from __future__ import annotations

import sys


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark to its current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB since the last reset (0 where unavailable).

    Linux: ``VmHWM`` of ``/proc/self/status`` (this process's own address space: a
    child started with fork + exec does not inherit its parent's mark, unlike
    ``ru_maxrss``).  Elsewhere ``getrusage``'s lifetime ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0

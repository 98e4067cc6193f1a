"""How many intra-op threads a framework should use: the container's CPU limit, not the host's cores."""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_limit(cgroup_root: Path = _CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), or None without a quota."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 else None


def default_threads(cgroup_root: Path = _CGROUP_ROOT) -> int:
    """Threads for one model instance: the CPU quota rounded up, capped by the CPUs this process may use."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cpu_limit(cgroup_root)
    if limit is None:
        return max(1, available)
    return max(1, min(available, math.ceil(limit)))

"""The memory guard: a fit that will not fit in memory is refused before it allocates.

Each estimator estimates the bytes its fit needs (:meth:`UMAP._memory_estimate`,
:meth:`Clustering._memory_estimate`, ...): the few arrays that grow with the data and the
parameters (kNN lists, the graph ``p`` and its copies, the clustering head's ``N x C`` tensors with
their gradients and optimiser state, the propagation lists). :func:`check_memory` compares the
estimate with :func:`available_memory`, the memory this process can still take: the headroom
under the cgroup limit (v2, or v1) when one is set, else ``MemAvailable`` from
``/proc/meminfo``; where neither can be read the guard stays silent.

Estimates are deliberately low (the largest arrays only, not every temporary), so a refusal
means the fit would certainly not fit. Set the environment variable
``ICONGRAPH_IGNORE_MEMORY_GUARD=1`` to run anyway (the guard then only warns).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

__all__ = ["InsufficientMemoryError", "available_memory", "check_memory", "format_bytes",
           "OVERRIDE_ENV"]

#: set to 1 (or true/yes) to proceed when the guard expects the fit not to fit in memory
OVERRIDE_ENV = "ICONGRAPH_IGNORE_MEMORY_GUARD"
#: where the kernel says what limits this process (module constants, so tests can point them
#: at a fake tree)
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
MEMINFO = Path("/proc/meminfo")
#: a cgroup v1 limit at or above this means "no limit" (the kernel stores ~2^63 rounded down)
_NO_LIMIT = 1 << 60


class InsufficientMemoryError(MemoryError, ValueError):
    """A fit was refused before it started because its estimated memory exceeds what is
    available. Both a ``MemoryError`` and a ``ValueError`` (bad parameters for this machine)."""


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest unit that keeps a number >= 1 (``'6.0 GB'``)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # 'max' (v2: no limit) -> None


def _reclaimable(stat_file: Path, key: str) -> int:
    """The page cache the kernel drops before it fails an allocation (``key`` of memory.stat)."""
    try:
        for line in stat_file.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_dirs(controller_root: Path, path: str) -> list[Path]:
    """The cgroup directories from this process's own up to the root that exist here (inside
    a container the own path is often not mounted: only the root is)."""
    dirs, current = [], Path(path.strip() or "/")
    while True:
        candidate = controller_root / str(current).lstrip("/")
        if candidate.is_dir():
            dirs.append(candidate)
        if current == current.parent:
            return dirs
        current = current.parent


def _cgroup_headroom() -> tuple[int, str] | None:
    """``(bytes, description)``: the least headroom under a memory limit of this process's
    cgroup or its ancestors (limit minus usage, less reclaimable file cache), or None when no
    limit is set or none can be read."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2 (unified)
            root = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else (
                CGROUP_ROOT / "unified")
            files = ("memory.max", "memory.current", "inactive_file", "cgroup v2")
        elif "memory" in controllers.split(","):
            root = CGROUP_ROOT / "memory"
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file",
                     "cgroup v1")
        else:
            continue
        limit_file, usage_file, cache_key, kind = files
        for folder in _cgroup_dirs(root, path):
            limit = _read_int(folder / limit_file)
            if limit is None or limit >= _NO_LIMIT:
                continue
            usage = _read_int(folder / usage_file) or 0
            usage -= _reclaimable(folder / "memory.stat", cache_key)
            headroom = max(limit - max(usage, 0), 0)
            if best is None or headroom < best[0]:
                best = (headroom, f"{kind} limit {format_bytes(limit)} at {folder}")
    return best


def _meminfo_available() -> int | None:
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> tuple[int, str] | None:
    """The memory this process can still allocate, and where the number comes from.

    Returns
    -------
    (int, str) or None
        Bytes, and a description (``'MemAvailable'`` or the cgroup limit that binds): the
        smaller of the headroom under a cgroup memory limit (v2 ``memory.max``, or v1
        ``memory.limit_in_bytes``, of this process's cgroup or an ancestor) and the system's
        ``MemAvailable``. None when neither can be read (not Linux): the guard is then off.
    """
    candidates = []
    system = _meminfo_available()
    if system is not None:
        candidates.append((system, "MemAvailable in /proc/meminfo"))
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        candidates.append(cgroup)
    return min(candidates, key=lambda c: c[0]) if candidates else None


def _overridden() -> bool:
    return os.environ.get(OVERRIDE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def check_memory(what: str, parts: dict[str, float], remedy: str) -> None:
    """Refuse a fit whose estimated memory exceeds what is available.

    Parameters
    ----------
    what : str
        The fit, for the message (``"UMAP on 50000 x 784"``).
    parts : dict of str to float
        Estimated peak bytes by item (``{"kNN graph": ..., "graph p": ...}``); the estimate is
        their sum, and the message names the largest items.
    remedy : str
        What the user can change (``"lower n_clusters or use head='linear'"``).

    Raises
    ------
    InsufficientMemoryError
        When the estimate exceeds :func:`available_memory` and ``ICONGRAPH_IGNORE_MEMORY_GUARD``
        is not set (set, the guard warns instead).
    """
    need = sum(parts.values())
    available = available_memory()
    if available is None or need <= available[0]:
        return
    items = sorted(parts.items(), key=lambda kv: -kv[1])
    detail = ", ".join(f"{name} {format_bytes(b)}" for name, b in items[:4] if b > 0)
    message = (f"{what} needs at least {format_bytes(need)} of memory ({detail}), but "
               f"{format_bytes(available[0])} are available ({available[1]}). {remedy}")
    if _overridden():
        warnings.warn(f"{message} Proceeding because {OVERRIDE_ENV} is set.", stacklevel=3)
        return
    raise InsufficientMemoryError(f"{message} To try anyway, set {OVERRIDE_ENV}=1.")

"""The memory limit a model must fit in (docs/reliability.md, "Limits").

A model file is small, but the arrays it asks for are not bounded by its size: the format
allows every activation up to 2**31-1 elements, so a 640-byte graph can describe
gigabytes of buffers.  The loader (``firmware_py.load`` / ``Model``) and the converter
therefore compute what a model needs at run time from the graph alone
(``executor.memory_budget``: the buffer planner's peak, the weights, the C layers' copies
of them, scratch and output copies) and refuse it, before allocating anything, when that
is more than the limit:

* ``memory_limit=`` (bytes, or a string such as ``"512M"``; 0 or ``"none"``: no limit),
* else the environment variable ``BNN_MEMORY_LIMIT`` (the same syntax),
* else the memory available now: ``MemAvailable`` of /proc/meminfo, lowered to what a
  cgroup (memory.max - memory.current) or RLIMIT_AS still allows; where none of them is
  known (not Linux), the physical memory.

Only numpy-free standard library code here.
"""

import os
import re

__all__ = ["MemoryBudgetError", "parse_size", "available_memory", "resolve_limit",
           "format_bytes", "ENV"]

ENV = "BNN_MEMORY_LIMIT"

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def _model_format_error():
    from .model_format import ModelFormatError
    return ModelFormatError


class MemoryBudgetError(_model_format_error()):
    """A model needs more memory than the limit (a ModelFormatError, so a ValueError: the
    file is refused like a malformed one, with a message that says how much and why)."""


def parse_size(text):
    """ "1048576", "512M", "1.5G", "2GiB" (binary units), "0" / "none" / "off" (no limit:
    returns 0) -> bytes (an int).  ValueError for anything else."""
    if isinstance(text, bool):
        raise ValueError("a size must be a number of bytes, got %r" % (text,))
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size must not be negative, got %d" % text)
        return text
    s = str(text).strip().lower()
    if s in ("none", "off", "unlimited"):
        return 0
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", s)
    if not m or m.group(2) not in _UNITS:
        raise ValueError("%r is not a size (bytes, or a number with K, M, G or T; 0 or "
                         "'none' for no limit)" % (text,))
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_bytes(n):
    n = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d bytes" % n) if unit == "bytes" else "%.1f %s" % (n, unit)
        n /= 1024.0


def _read_int(path):
    try:
        with open(path) as f:
            v = f.read().strip()
    except OSError:
        return None
    return int(v) if v.isdigit() else None


def _cgroup_room():
    """memory.max - memory.current of this process's cgroup (v2), or None."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for ln in lines:
        if ln.startswith("0::"):
            base = os.path.join("/sys/fs/cgroup", ln[3:].lstrip("/"))
            limit = _read_int(os.path.join(base, "memory.max"))
            if limit is None:
                return None
            used = _read_int(os.path.join(base, "memory.current")) or 0
            return max(limit - used, 0)
    return None


def available_memory():
    """(bytes, where that figure comes from) for the memory a new model may take now, or
    (None, why) when it cannot be known."""
    avail, src = None, None
    try:
        with open("/proc/meminfo") as f:
            for ln in f:
                if ln.startswith("MemAvailable:"):
                    avail, src = int(ln.split()[1]) * 1024, "MemAvailable"
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            src = "physical memory"
        except (ValueError, OSError, AttributeError):
            pass
    room = _cgroup_room()
    if room is not None and (avail is None or room < avail):
        avail, src = room, "the cgroup's memory.max"
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and (avail is None or soft < avail):
            avail, src = soft, "RLIMIT_AS"
    except (ImportError, OSError, ValueError):
        pass
    if avail is None:
        return None, "the available memory is unknown on this system"
    return avail, src


def resolve_limit(limit=None):
    """(limit in bytes or None for no limit, how it was chosen): ``limit`` (bytes or a
    size string; 0 / "none": no limit), else $BNN_MEMORY_LIMIT, else the available
    memory.  ValueError for a malformed value."""
    if limit is not None:
        n = parse_size(limit)
        return (n or None), ("memory_limit=%s" % (limit,) if n else "no limit")
    env = os.environ.get(ENV)
    if env:
        try:
            n = parse_size(env)
        except ValueError as e:
            raise ValueError("$%s: %s" % (ENV, e)) from None
        return (n or None), ("$%s=%s" % (ENV, env) if n else "no limit")
    avail, src = available_memory()
    if avail is None:
        return None, src
    return avail, ("the memory available now, from %s; memory_limit=, --memory-limit or $%s "
                   "change it" % (src, ENV))

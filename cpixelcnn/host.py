"""What this host has free: memory, as the kernel, the job's cgroup and the address-space limit
(``ulimit -v``) allow. Below everything that plans memory (the trainer's batch plan, the data
cache's choice between memory and disk); no torch."""

from __future__ import annotations

import contextlib


def host_memory_limits() -> list[tuple[float, str]]:
    """Every limit on the host memory this process may still take: (bytes, what limits it)."""
    limits = [(_meminfo("MemAvailable"), "available on this machine")]
    limits += _cgroup_room()
    limits += _address_space_room()
    return [(value, why) for value, why in limits if value is not None]


def host_memory_free() -> tuple[float, str]:
    """(bytes this process may still take on the host, what limits it); (inf, "unknown") where nothing says."""
    limits = host_memory_limits()
    return min(limits) if limits else (float("inf"), "unknown")


def status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))


def _meminfo(key: str) -> float | None:
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/meminfo") as f:
            return float(next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":")))
    return None


def _cgroup_room() -> list[tuple[float, str]]:
    """The memory cgroup's limit less its usage (cgroup v2, else v1), where there is a limit."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/cgroup") as f:
            path = next(line.strip().split(":", 2)[2] for line in f if line.startswith("0::"))
        base = f"/sys/fs/cgroup{path}"
        with open(f"{base}/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open(f"{base}/memory.current") as f:
                return [(float(int(limit) - int(f.read())), "left under this job's cgroup memory limit")]
        return []
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory/memory.limit_in_bytes") as f:
            limit = int(f.read())
        if limit < 2**60:
            with open("/sys/fs/cgroup/memory/memory.usage_in_bytes") as f:
                return [(float(limit - int(f.read())), "left under this job's cgroup memory limit")]
    return []


def _address_space_room() -> list[tuple[float, str]]:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return []
    return [(float(soft - status_bytes("VmSize")), "left under this process's address-space limit (ulimit -v)")]

"""Memory readings that mean what they say.

CPU: RSS moves with file-backed pages of libtorch (hundreds of MB for identical code), so we read
RssAnon, the anonymous memory the process actually allocated. CUDA: the caching allocator's peak
allocated and reserved bytes on this process's device, reset at every step so each step has its own.
"""

from __future__ import annotations

MB = 1024 * 1024


def rss_anon_mb() -> float | None:
    """Anonymous resident memory of this process in MB (Linux); total RSS elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / MB
    except Exception:
        return None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cuda_peak_mb_and_reset(device) -> tuple[float, float]:
    """(max allocated, max reserved) in MB since the last reset, then reset for the next step."""
    import torch

    allocated = torch.cuda.max_memory_allocated(device) / MB
    reserved = torch.cuda.max_memory_reserved(device) / MB
    torch.cuda.reset_peak_memory_stats(device)
    return allocated, reserved

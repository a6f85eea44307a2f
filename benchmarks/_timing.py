"""Clocks and peak memory for the benchmarks, on the CPU or a CUDA device (the one place for both).

CUDA kernels run asynchronously, so `now` waits for the device before it reads the clock. Peak memory is
what a measured call added on top of what was there before it: on the CPU the process's peak RSS (Linux:
the peak mark is reset first, so earlier peaks do not count), on CUDA the caching allocator's peak of
allocated bytes (`torch.cuda.max_memory_allocated` after `torch.cuda.reset_peak_memory_stats`).

    device = use_machine(args)
    before = reset_peak_memory(device)
    start = now(device)
    work()
    seconds, peak_mib = now(device) - start, peak_memory_mib(device, before)
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch


def add_machine_arguments(parser: argparse.ArgumentParser, device: str = "cpu") -> None:
    """`--threads` (torch intra-op threads; 1, as every number in docs/benchmarks.md was measured) and
    `--device` (where the benchmark runs: cpu, cuda or cuda:N; auto: the GPU when there is one)."""
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default=device, help="cpu | cuda[:N] | auto (the GPU if there is one)")


def use_machine(args: argparse.Namespace) -> torch.device:
    """Set torch's intra-op threads to `args.threads`; returns the device `args.device` names."""
    torch.set_num_threads(args.threads)
    return parse_device(args.device)


def print_result(benchmark: str, device: torch.device | str, results: dict) -> None:
    """Print a benchmark's JSON: its name, the device, `results` and the machine (CPU, threads, torch)."""
    from sgp_lightning.utils import machine_info

    payload = {"benchmark": benchmark, "device": str(device), **results, "machine": machine_info()}
    print(json.dumps(payload, indent=2))


def parse_device(name: str) -> torch.device:
    """The torch device `name` names (auto: cuda when available); fails clearly without a GPU."""
    from sgp_lightning.plan import resolve_device

    return resolve_device(name)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """`time.perf_counter()` in seconds, after the device's queued work has finished."""
    synchronize(device)
    return time.perf_counter()


def _proc_status_mib(key: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024  # kB → MiB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> float:
    """The current RSS in MiB, after resetting the peak-RSS mark where Linux allows it (clear_refs 5).
    Elsewhere the mark is the process's lifetime peak, which may include building the networks."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _proc_status_mib("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_mib() -> float:
    peak = _proc_status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_memory(device: torch.device) -> float:
    """Start a peak-memory measurement; returns the MiB in use now (pass it to `peak_memory_mib`)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return _reset_peak_rss()


def peak_memory_mib(device: torch.device, before: float) -> float:
    """MiB the work since `reset_peak_memory` added at its peak over the `before` it returned."""
    if device.type == "cuda":
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20 - before
    return _peak_rss_mib() - before

"""Provenance of a run: the commit of the code, package versions, the device. Read when a run
starts, never at import (`bench --help` runs no git and loads no torch)."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def versions() -> dict:
    """The versions of Python and of the packages a run's numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "mmengine", "mmcv", "mmcv-lite", "mmdet", "mmsegmentation", "kornia",
                "pycocotools", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


@functools.cache
def commit() -> str:
    """The commit of the code this process runs, read once, when the first run starts (not at import:
    `bench --help` runs no git): a `compare` that outlives a commit still records the commit whose code it ran."""
    # a launcher that copies the tree (e.g. the device tool) says which commit it sent: the copy's own
    # git metadata can be older than its files
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.strip()
        # the code's state: records and tables under results/ are outputs, rewritten by runs in flight
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"  # a copy without .git


def device_name(device: str) -> str:
    """The device a run used, in words (CPU model, cores and threads; or the GPU and its count)."""
    import torch
    if device == "cuda":
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"

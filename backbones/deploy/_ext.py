"""Builds the packed 1-bit conv (bitconv.cpp) on first use with torch.utils.cpp_extension and caches
it: the build folder is keyed by a hash of the source, the torch version and the Python ABI, under
$BINEALBENCH_CACHE or ~/.cache/binealbench (never inside the repository)."""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parent / "bitconv.cpp"


class KernelUnavailable(RuntimeError):
    """No C++ compiler (or the build failed): the packed kernels cannot be used on this machine."""


def cache_dir() -> Path:
    root = Path(os.environ.get("BINEALBENCH_CACHE", Path.home() / ".cache" / "binealbench"))
    key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode() + sys.version.encode()).hexdigest()[:16]
    return root / f"bitconv-{key}"


def compiler() -> str | None:
    """The C++ compiler cpp_extension will call ($CXX, else c++), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "c++")) or None


@functools.lru_cache(maxsize=1)
def load():
    """The compiled ops (torch.ops.binealbench) (built once per source/torch version, then loaded from the cache)."""
    if compiler() is None:
        raise KernelUnavailable(f"no C++ compiler found (looked for {os.environ.get('CXX', 'c++')!r}; set CXX or "
                                "install g++): the packed 1-bit kernels cannot be built")
    from torch.utils import cpp_extension
    build = cache_dir()
    build.mkdir(parents=True, exist_ok=True)
    try:
        # -ffp-contract=off: the quantizer's x+b0, slope*v, +b1 round as PyTorch's separate ops do (no FMA);
        # -fopenmp: at::parallel_for is OpenMP here (torch's own libgomp is the one loaded)
        cpp_extension.load(name="binealbench_bitconv", sources=[str(SOURCE)], build_directory=str(build),
                           extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off"], extra_ldflags=["-fopenmp"],
                           is_python_module=False, verbose=False)
    except Exception as e:  # compile or link error: say what and where
        raise KernelUnavailable(f"building {SOURCE.name} failed in {build} ({e.__class__.__name__}: "
                                f"{str(e).strip().splitlines()[-1] if str(e).strip() else e})") from e
    return torch.ops.binealbench  # the ops the library registered (TORCH_LIBRARY)


def available() -> tuple[bool, str]:
    """(True, cpu path) when the kernels load, else (False, why)."""
    try:
        return True, load().cpu_path("auto")
    except KernelUnavailable as e:
        return False, str(e)

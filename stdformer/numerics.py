"""The numeric environment of the stages, fixed so the same params give the same bytes (the body
model, the synthetic set, the weights, the evaluation), bit for bit, on any x86-64 CPU with AVX2,
whatever its core count or instruction set.

What changes float results on a CPU, and what pins it (measured with torch 2.13, see
tests/test_numerics.py):

* the intra-op thread count (how reductions such as a convolution's weight gradient or a matrix
  product are split): `STAGE_THREADS` for every stage, `train.threads` for training, never the
  machine's core count;
* the instruction set of ATen's own kernels (AVX-512 vs AVX2 changes softmax, random number
  generation, ...): ATEN_CPU_CAPABILITY=avx2;
* oneDNN's convolutions (AVX-512 vs AVX2 vs SSE4.1 kernels): ONEDNN_MAX_CPU_ISA=AVX2;
* MKL's BLAS/LAPACK (matmul, SVD): conditional numerical reproducibility, MKL_CBWR=COMPATIBLE
  (the one branch MKL documents as giving the same results on Intel and non-Intel CPUs), with
  dynamic thread adjustment off;
* numpy's own SIMD kernels (its AVX-512 paths change float64 results in the last bit, measured on
  the body model): NPY_DISABLE_CPU_FEATURES lists the AVX-512 targets;
* OpenBLAS, numpy's BLAS (its SkylakeX kernels differ from its Haswell ones):
  OPENBLAS_CORETYPE=Haswell, the AVX2 kernels;
* non-deterministic algorithms: `torch.use_deterministic_algorithms(True)` on CPU.

numpy and OpenBLAS read their variables when numpy is imported, ATen and oneDNN when torch runs
its first operation, so `pin_environment()` must run before both (`stages/__init__.py` calls it
for every stage, before the library is imported; DataLoader workers inherit the environment).
`apply()` then sets the thread count and reports what is in effect, including whether the pin
came too late in this process.
This module does not import torch at import time.
"""

from __future__ import annotations

import os
import platform
from typing import Any


def _numpy_avx512_targets() -> str:
    """numpy's names for its AVX-512 dispatch targets (renamed in 2.4), read without importing
    numpy: a name numpy does not know would only earn an ImportWarning."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("numpy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        major, minor = 2, 4
    if (major, minor) >= (2, 4):
        return "X86_V4 AVX512_ICL AVX512_SPR"
    return "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL " \
           "AVX512_SPR"


PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
    "NPY_DISABLE_CPU_FEATURES": _numpy_avx512_targets(),
    "OPENBLAS_CORETYPE": "Haswell",
}


# Intra-op threads of every stage (torch, MKL): the count changes float results (a matrix
# product split over 1 or 2 threads rounds differently; measured on the synthetic set's joints),
# so it is fixed, not taken from the machine. Training replaces it with `train.threads`.
STAGE_THREADS = 2


def pin_environment(threads: int = STAGE_THREADS) -> None:
    """Set the ISA variables and the OpenMP/MKL thread counts. Call before numpy is imported and
    before torch runs its first operation in this process; overrides whatever the caller's shell
    set. The instruction-set names are x86-64's: elsewhere only the threads are set."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.update(PINNED_ENV)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def apply(threads: int, device_type: str = "cpu") -> dict[str, Any]:
    """Pin this process's numerics for training on `device_type` and return what is in effect
    (recorded in the metrics and the model file). GPU kernels are not pinned (see README)."""
    import cv2
    import torch

    pin_environment(threads)
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    if device_type == "cpu":
        torch.use_deterministic_algorithms(True)
    return in_effect()


def in_effect() -> dict[str, Any]:
    """The numeric settings this process runs with."""
    import torch

    return {
        "threads": torch.get_num_threads(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **{name.lower(): os.environ.get(name) for name in
           ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE")},
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "torch": str(torch.__version__),
    }


def pinned_too_late(effect: dict[str, Any]) -> bool:
    """True when ATen picked its AVX-512 kernels before the pin (torch ran an operation first):
    then oneDNN may have too, and the weights can differ from other machines'."""
    return str(effect["aten_cpu_capability"]).startswith("AVX512")

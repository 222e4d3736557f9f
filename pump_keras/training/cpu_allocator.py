"""TensorFlow's host memory allocator, chosen before its runtime starts.

TensorFlow's default CPU allocator hands large freed buffers back to the
system, so every new full-size activation of a train step is paged in afresh;
its BFC allocator keeps freed memory for the next tensors. Imports nothing
heavy, so JAX-only code and benchmarks can use it too.
"""

from __future__ import annotations

import os

from pump_keras.config.schema import CPU_ALLOCATORS

# TensorFlow reads this when its runtime starts (the first op), not at import.
VARIABLE = "TF_CPU_ALLOCATOR_USE_BFC"


def select_cpu_allocator(name: str) -> None:
    """Makes `"bfc"` or `"default"` TensorFlow's host allocator for this process.

    Only takes effect before TensorFlow's runtime starts; later it changes nothing.
    """
    if name not in CPU_ALLOCATORS:
        raise ValueError(f"cpu allocator must be one of {CPU_ALLOCATORS}, got {name!r}.")
    os.environ[VARIABLE] = "true" if name == "bfc" else "false"

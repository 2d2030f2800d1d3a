"""Does XLA:CPU slow down on float32 subnormals (denormals)? One jitted elementwise op and one
1024^3 matmul, timed in turns on normal (1.0) and subnormal (1e-39) inputs, medians of 30
calls each; then whether XLA flushes subnormal results to zero (numpy does not).

    python benchmarks/denormals.py
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
    elementwise = jax.jit(lambda x, y: (x * y + x) * 0.5)
    matmul = jax.jit(lambda a, b: a @ b)
    normal = np.full((1024, 1024), 1.0, np.float32)
    subnormal = np.full((1024, 1024), 1e-39, np.float32)
    assert 0 < subnormal[0, 0] < np.finfo(np.float32).tiny
    inputs = {"normal": (jnp.asarray(normal), jnp.asarray(normal)), "subnormal": (jnp.asarray(subnormal), jnp.asarray(normal))}
    for fn, name in ((elementwise, "elementwise"), (matmul, "matmul 1024^3")):
        times = {k: [] for k in inputs}
        for args in inputs.values():
            jax.block_until_ready(fn(*args))
        for i in range(30):
            for k, args in (list(inputs.items()) if i % 2 else list(inputs.items())[::-1]):
                t = time.perf_counter()
                jax.block_until_ready(fn(*args))
                times[k].append(time.perf_counter() - t)
        medians = {k: statistics.median(v) for k, v in times.items()}
        print(f"{name}: normal {medians['normal'] * 1e3:.2f} ms, subnormal {medians['subnormal'] * 1e3:.2f} ms "
              f"(ratio {medians['subnormal'] / medians['normal']:.3f})")
    flushed = float(np.asarray(elementwise(*inputs["subnormal"]))[0, 0])
    print(f"(x * y + x) * 0.5 of x = 1e-39, y = 1: XLA {flushed!r}, numpy {float((subnormal * normal + subnormal)[0, 0] * 0.5)!r} "
          f"({'XLA flushes subnormals to zero' if flushed == 0.0 else 'XLA keeps subnormals'})")


if __name__ == "__main__":
    main()

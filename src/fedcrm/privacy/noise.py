"""Gaussian noise for the node's own releases (statistics, evaluation), from OS entropy.

DP-SGD's noise is Opacus' (`fedcrm.ml.training` reseeds its generator from `os.urandom`);
the releases the node noises itself draw here. Nothing the coordinator sends, the run's
seed included, can predict or replay these draws.
"""

from __future__ import annotations

import os

import numpy as np


def os_normal(std: float, shape: tuple[int, ...] = ()) -> np.ndarray:
    """Gaussian draws from `os.urandom` (53-bit uniforms, Box–Muller): a CSPRNG, at the cost
    of a syscall — fine for the few hundred values of one release. (numpy's
    `default_rng()` would also seed itself with 128 bits of OS entropy, but is PCG64.)"""
    n = int(np.prod(shape, dtype=np.int64))
    words = np.frombuffer(os.urandom(16 * n), dtype=np.uint64).reshape(2, n) if n else np.zeros((2, 0), np.uint64)
    u1, u2 = ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # in (0, 1]
    return (std * np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * np.pi * u2)).reshape(shape)



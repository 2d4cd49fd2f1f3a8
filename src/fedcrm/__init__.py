"""fedcrm: privacy-preserving federated churn and propensity models (Flower + Opacus)."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """`fedcrm.__version__`, read from the installed metadata when asked for: importing
    `importlib.metadata` costs about 60 ms, paid by every `fedcrm --help` and every fresh
    ClientApp process that never asks (`benchmarks/overhead.py`, start-up)."""
    if name != "__version__":
        raise AttributeError(f"module 'fedcrm' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fedcrm")  # single source: [project].version in pyproject.toml
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"

"""fedcrm: privacy-preserving federated churn and propensity models (Flower + Opacus)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedcrm")  # single source: [project].version in pyproject.toml
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

"""ε from the partner's ledger, and the noise a run needs to stay within its target.

Every ε here is Opacus' accountant applied to the partner's whole history — a list of
(noise_multiplier, sample_rate, steps), exactly what Opacus keeps itself — never a sum
of per-round figures. PRV is the default (tight); RDP is reported alongside because it is
the figure most papers and regulators have seen. `tests/test_ledger.py` cross-checks both
against Google's `dp-accounting`, an independent implementation.

"ε spent by a run" is the increase of the partner's cumulative ε over the run. Composition
is sub-additive, so a run on data that already has history costs less than the same run
on fresh data: planning calibrates the noise against the ledger, not in isolation.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from fedcrm.config.plan import NOISE_MAX, NOISE_MIN
from fedcrm.errors import ConfigError, PrivacyBudgetError

if TYPE_CHECKING:
    from functools import _lru_cache_wrapper

    from fedcrm.privacy.memo import EpsilonMemo

AccountantKind = Literal["prv", "rdp"]
HistoryEntry = tuple[float, float, int]
# The least and most noise this node ever uses or calibrates (justified in config/plan.py):
# a run whose target ε would allow less noise gets σ = SIGMA_MIN and spends less than asked.
SIGMA_MIN, SIGMA_MAX = NOISE_MIN, NOISE_MAX
# Most grid points Opacus' PRV accountant may discretise one history on. Its peak memory is
# about 64 bytes a point (≈ 128 MiB here) and its time a few seconds; the demo's runs need
# about 6e4 points, a partner's cap is reached long before this bound.
MAX_PRV_POINTS = 2_000_000
# Optimiser steps one round may take on a node (rows / batch × local epochs): with DP about
# a millisecond each, so ~1 minute of a core; a larger round is refused, not run.
MAX_STEPS_PER_ROUND = 50_000


class UnaccountableRelease(PrivacyBudgetError):
    """The node cannot compute ε for this history within bounded memory and time, so it
    cannot prove the release stays within budget: refused before any large allocation."""


def compact(history: list[HistoryEntry]) -> tuple[HistoryEntry, ...]:
    """Merge runs of identical (σ, q): composing n then m steps is composing n + m."""
    out: list[HistoryEntry] = []
    for s, q, n in history:
        if out and out[-1][0] == s and out[-1][1] == q:
            out[-1] = (s, q, out[-1][2] + int(n))
        else:
            out.append((float(s), float(q), int(n)))
    return tuple(out)


@lru_cache(maxsize=1)
def _memoised_rdp() -> _lru_cache_wrapper[float]:
    """Opacus' per-order RDP of one Poisson-subsampled Gaussian step, `_compute_rdp(q, σ,
    α)`, remembered. It is a pure function, and both accountants ask it again and again
    for the same (q, σ): the PRV accountant bounds its grid with an RDP accountant over
    the whole history and over each entry (`compute_safe_domain_size`), so every ε of a
    calibration search, and every charge on a node, recomputes the prior's RDP at some
    sixty orders, the fractional ones by a series in pure Python. That was ~45 % of the
    accounting time of a node in a simulation (py-spy on its ClientApp actors)."""
    from opacus.accountants.analysis import rdp
    from opacus.accountants.analysis.prv import prvs

    remembered = lru_cache(maxsize=1 << 16)(rdp._compute_rdp)
    rdp._compute_rdp = prvs._compute_rdp = remembered  # type: ignore[assignment]
    return remembered


@lru_cache(maxsize=1)
def _bounded_prv() -> type:
    """`BoundedPRVAccountant`, defined on first use: Opacus is imported where a release is
    accounted, not by every process that imports this module (1-2.5 s of a node's start)."""
    from opacus.accountants import PRVAccountant

    class BoundedPRVAccountant(PRVAccountant):
        """Opacus' PRV accountant, refusing a history whose discretisation grid would pass
        `MAX_PRV_POINTS`: the check sits on the domain Opacus computes anyway, before it
        allocates the grid, so it costs nothing."""

        def _get_domain(self, *args: object, **kwargs: object):  # noqa: ANN202 (Opacus' Domain)
            domain = super()._get_domain(*args, **kwargs)
            if domain.size > MAX_PRV_POINTS:
                sigma, steps = min(s for s, _, _ in self.history), sum(n for *_, n in self.history)
                raise UnaccountableRelease(
                    f"PRV accounting of this history needs {domain.size:.3g} grid points (limit {MAX_PRV_POINTS:.3g}): "
                    f"noise multiplier {sigma:g} is too small or {steps} steps too many; the node refuses rather "
                    "than exhaust its memory")
            return domain

    return BoundedPRVAccountant


_kept_on_disk: EpsilonMemo | None = None


def remember_in(memo: EpsilonMemo | None) -> None:
    """Also look up and keep every ε in `memo` (`fedcrm.privacy.memo`): a node's results
    for its next process. Process-wide, as the in-process memo is: a value is the same
    whichever node asks, and a node process serves one partner at a time. Every ε asked
    while a memo is in use goes into it, also one this process computed earlier for
    another node (a simulation's actor serves many), so a node's memo never depends on
    what the process did before."""
    global _kept_on_disk
    _kept_on_disk = memo


@lru_cache(maxsize=512)
def _epsilon(history: tuple[HistoryEntry, ...], delta: float, kind: AccountantKind) -> float:
    if any(not (s > 0 and math.isfinite(s)) or not (0 < q <= 1) or n < 0 for s, q, n in history):
        raise UnaccountableRelease(f"history entry out of range: {history}")
    memo = _kept_on_disk
    if memo is not None and (kept := memo.get(history, delta, kind)) is not None:
        return kept
    return _computed(history, delta, kind)


def _computed(history: tuple[HistoryEntry, ...], delta: float, kind: AccountantKind) -> float:
    from opacus.accountants import RDPAccountant

    _memoised_rdp()
    accountant = _bounded_prv()() if kind == "prv" else RDPAccountant()
    accountant.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Optimal order is the largest alpha" on every PRV call
        return float(accountant.get_epsilon(delta))


def epsilon(history: list[HistoryEntry] | tuple[HistoryEntry, ...], delta: float,
            kind: AccountantKind = "prv") -> float:
    """ε of the whole history at δ, from Opacus' accountant."""
    history = compact(list(history))
    if not history:
        return 0.0
    value = _epsilon(history, float(delta), kind)
    if _kept_on_disk is not None:  # kept whether computed now or earlier in this process, for this node's next one
        _kept_on_disk.put(history, float(delta), kind, value)
    return value


class _Calibrated(Exception):
    """Raised from inside the root finder when an evaluated σ lands in the target band."""

    def __init__(self, sigma: float) -> None:
        self.sigma = sigma


def calibrate_noise(prior: tuple[HistoryEntry, ...], sample_rate: float, steps: int, target_total: float,
                    delta: float, kind: AccountantKind = "prv", tolerance: float = 0.01) -> float:
    """Smallest σ ≥ SIGMA_MIN (to `tolerance` in ε) with which `steps` more steps keep the
    cumulative ε, prior history included, at or under `target_total`. A σ whose history
    cannot be accounted within bounds counts as too little noise: the σ returned always
    has its ε computed, and is the least σ evaluated at or under the target.

    Every evaluation is one PRV accounting (0.1-8 s on a fresh node process, longer the
    smaller σ), so the search brackets the answer from above, then runs Brent's method on
    log ε against log σ, where the curve is close to a line (`benchmarks/calibration.py`
    counts evaluations and seconds against the bisection it replaced).

    Not remembered as a whole: the search runs again on every call, each ε a lookup once
    computed (`epsilon`), so every point of it also reaches the memo of the node asking,
    for that node's next process. A remembered σ left a second node's memo without them,
    and its evaluation's process loaded Opacus to search again."""
    from scipy.optimize import brentq

    safe = [math.inf]  # the least σ evaluated whose ε is at or under the target

    def eps(sigma: float) -> float:
        try:
            e = epsilon(list(prior) + [(sigma, sample_rate, steps)], delta, kind)
        except UnaccountableRelease:
            return math.inf
        if e <= target_total:
            safe[0] = min(safe[0], sigma)
            if target_total - e <= tolerance * target_total:
                raise _Calibrated(sigma)
        return e

    def gap(log_sigma: float) -> float:  # log ε − log target: increasing as σ falls, 0 at the answer
        e = eps(math.exp(log_sigma))
        return math.log(e / target_total) if math.isfinite(e) and e > 0 else 50.0

    try:
        high, e_high = 2.0, eps(2.0)
        while e_high > target_total:  # the bracket's safe end
            high *= 2
            if high > SIGMA_MAX:
                epsilon(list(prior) + [(SIGMA_MAX, sample_rate, steps)], delta, kind)  # raises if unaccountable
                raise PrivacyBudgetError(f"no noise multiplier up to {SIGMA_MAX:g} keeps ε at {target_total:.3f}")
            e_high = eps(high)
        # the other end, stepping down from the safe side: log ε falls about linearly in log σ,
        # with a slope of about -1 at large σ steepening to -3 near the floor; a steep first
        # guess stops short (cheap: the smaller σ, the slower an evaluation), the secant of
        # two safe points then overshoots a little, just past the answer
        slope = 2.0
        while True:
            low = max(SIGMA_MIN, min(0.999 * high, 0.99 * high * (e_high / target_total) ** (1 / slope)))
            e_low = eps(low)
            if e_low > target_total:
                break
            if low == SIGMA_MIN:
                return SIGMA_MIN  # a target so loose that σ is pinned at the floor
            slope = max(0.5, math.log(e_low / e_high) / math.log(high / low))
            high, e_high = low, e_low
        brentq(gap, math.log(low), math.log(high), xtol=1e-3, rtol=1e-6, maxiter=60)
    except _Calibrated as found:
        return found.sigma
    return safe[0]


class RoundProjection(BaseModel):
    round: int
    epsilon: float
    epsilon_rdp: float
    within_cap: bool


class RunPlan(BaseModel):
    """What a run will cost one partner, computed before it spends anything."""

    partner: str
    rows: int
    sample_rate: float
    steps_per_round: int
    rounds: int
    delta: float
    accountant: AccountantKind
    max_grad_norm: float
    target_run_epsilon: float
    epsilon_cap: float
    spent_before: float
    noise_multiplier: float
    projections: list[RoundProjection]
    statistics_noise: float = Field(0.0, description="σ of the statistics release this run pays for first "
                                    "(0: none, exact, or a kept release sent again at no cost)")
    evaluations: int = Field(0, description="hold-out evaluations the run plans (0: none charged)")
    evaluation_noise: float = Field(0.0, description="σ on every count of the evaluation histograms")
    epsilon_holdout_after: float | None = Field(
        None, description="ε of the hold-out customers after the run's evaluations (they read no training row)")
    baseline_steps: int = Field(0, description="DP-SGD steps of the run's local-only baseline (0: none asked)")
    epsilon_after_baseline: float | None = Field(
        None, description="ε of the training customers after the run and its local-only baseline")

    @property
    def epsilon_after(self) -> float:
        """The partner's ε after the run (its last round and that round's evaluation)."""
        last = self.projections[-1].epsilon if self.projections else self.spent_before
        return max(last, self.epsilon_holdout_after or 0.0, self.epsilon_after_baseline or 0.0)

    @property
    def baseline_within_cap(self) -> bool | None:
        """Whether the local-only baseline, after the whole run, stays within the cap (None: none asked)."""
        return None if self.epsilon_after_baseline is None else self.epsilon_after_baseline <= self.epsilon_cap

    @property
    def first_refused_round(self) -> int | None:
        return next((p.round for p in self.projections if not p.within_cap), None)


class RoundTooLarge(ConfigError):
    """The run asks one round for more optimiser steps than a node will take."""


def round_shape(rows: int, batch_size: int, local_epochs: int) -> tuple[int, float]:
    """Steps per round and Poisson sample rate, as Opacus will run them."""
    per_epoch = max(1, math.ceil(rows / batch_size))
    if local_epochs * per_epoch > MAX_STEPS_PER_ROUND:
        raise RoundTooLarge(f"{local_epochs} epochs × {per_epoch} steps is more than the {MAX_STEPS_PER_ROUND} "
                            "steps a node takes in one round; use a larger batch or fewer epochs")
    return local_epochs * per_epoch, 1.0 / per_epoch


class RunNoise(BaseModel):
    """The mechanism of one run on one partner: what the node needs before a round."""

    sample_rate: float
    steps_per_round: int
    spent_before: float
    noise_multiplier: float


def run_noise(*, prior: list[HistoryEntry], rows: int, batch_size: int, local_epochs: int, rounds: int,
              target_run_epsilon: float, delta: float, accountant: AccountantKind = "prv",
              sigma: float | None = None, run_releases: list[HistoryEntry] | None = None) -> RunNoise:
    """Calibrate σ so the run raises the cumulative ε by at most `target_run_epsilon`.

    `run_releases`: what this run released before training (its statistics): they are
    paid from the run's own ε, so training gets what they leave of it."""
    steps, q = round_shape(rows, batch_size, local_epochs)
    prior_t = compact(prior)
    before = epsilon(prior_t, delta, accountant)
    if sigma is None:
        sigma = calibrate_noise(compact([*prior, *(run_releases or [])]), q, steps * rounds,
                                before + target_run_epsilon, delta, accountant)
    return RunNoise(sample_rate=q, steps_per_round=steps, spent_before=before, noise_multiplier=sigma)


def plan_run(*, partner: str, prior: list[HistoryEntry], rows: int, batch_size: int, local_epochs: int,
             rounds: int, target_run_epsilon: float, delta: float, epsilon_cap: float,
             max_grad_norm: float, accountant: AccountantKind = "prv", sigma: float | None = None,
             run_releases: list[HistoryEntry] | None = None) -> RunPlan:
    """`run_noise`, then ε after every round projected against the partner's cap."""
    noise = run_noise(prior=prior, rows=rows, batch_size=batch_size, local_epochs=local_epochs, rounds=rounds,
                      target_run_epsilon=target_run_epsilon, delta=delta, accountant=accountant, sigma=sigma,
                      run_releases=run_releases)
    q, steps, sigma = noise.sample_rate, noise.steps_per_round, noise.noise_multiplier
    projections = []
    for r in range(1, rounds + 1):
        history = list(compact([*prior, *(run_releases or [])])) + [(sigma, q, steps * r)]
        e = epsilon(history, delta, accountant)
        projections.append(RoundProjection(round=r, epsilon=e, epsilon_rdp=epsilon(history, delta, "rdp"),
                                           within_cap=e <= epsilon_cap))
    return RunPlan(partner=partner, rows=rows, sample_rate=q, steps_per_round=steps, rounds=rounds, delta=delta,
                   accountant=accountant, max_grad_norm=max_grad_norm, target_run_epsilon=target_run_epsilon,
                   epsilon_cap=epsilon_cap, spent_before=noise.spent_before, noise_multiplier=sigma,
                   projections=projections,
                   statistics_noise=max((s for s, q, n in run_releases or [] if q == 1.0 and n == 1), default=0.0))

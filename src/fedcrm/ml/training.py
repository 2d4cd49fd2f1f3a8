"""Local training and evaluation on one partner's prepared data.

With DP, Opacus owns the wrapping of model, optimiser and data loader (Poisson sampling,
per-sample clipping, Gaussian noise). The accountant is given the partner's whole past
history before the first step, so the ε it reports afterwards covers every step ever taken
— the trap of rebuilding a fresh PrivacyEngine each round is avoided by construction.

DP noise and Poisson sampling draw from OS entropy, never from the run's seed: the seed is
the coordinator's, and a coordinator that can replay the noise can subtract it (issue 12,
attack 1). Opacus' noise comes from a `torch.Generator` seeded from `os.urandom` when
training starts and reseeded from it before every step; each Poisson batch from a numpy
generator seeded from 128 fresh OS bits (`PoissonBatches`). No state outlives one step's
draws. Neither is a CSPRNG (Opacus' `secure_mode` needs torchcsprng, which has no build
here); see README, "Privacy". The seed still steers non-DP shuffling.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedcrm.ml.evaluation import binary_metrics, score_histograms
from fedcrm.privacy.accounting import HistoryEntry, round_shape
from fedcrm.protocol import HeldOutMetrics

if TYPE_CHECKING:  # Opacus is imported where DP-SGD runs: 1-2.5 s of a node process's start
    from opacus import PrivacyEngine

# Opacus calls logging.basicConfig on import: Flower's logger has a handler of its own, so
# without this every Flower line would print twice (once through the root's new handler).
logging.getLogger("flwr").propagate = False
# Opacus' per-sample hooks make torch warn on every backward of a module whose output needs
# no gradient (our first layer); it is expected and says nothing about the run.
warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)


@dataclass(frozen=True)
class DPSettings:
    noise_multiplier: float
    max_grad_norm: float
    delta: float
    history: list[HistoryEntry]
    # how Opacus gets per-sample gradient norms: "hooks", "ew", "functorch", or "ghost"
    # (ghost clipping: norms without materialising per-sample gradients); the node picks
    # one per model by measurement (`grad_sample_mode`)
    grad_sample_mode: str = "hooks"


@dataclass(frozen=True)
class TrainOutcome:
    state_dict: dict[str, torch.Tensor]
    mean_loss: float
    steps: int
    sample_rate: float
    history: list[HistoryEntry]  # Opacus' accountant history after this round (DP only)


def _optimizer(model: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    return torch.optim.SGD(model.parameters(), lr=lr)


def grad_sample_mode(model_kind: str) -> str:
    """Opacus' per-sample gradient mode for a model, as measured (`benchmarks/overhead.py`:
    40,000 rows, batch 256, one thread): ghost clipping for the MLPs (6.1× and 4.6× our loop
    without DP at 32 and 256 hidden units, where hooks took 7.8× and 31×), hooks for the
    logistic model (4.6× against ghost's 6.0×). The guarantee is the same in every mode: per-sample
    clipping at the same norm, the same noise, the same sampling."""
    return "ghost" if model_kind == "mlp" else "hooks"


def reseed_from_os(generator: torch.Generator) -> torch.Generator:
    """Seed `generator` with 64 fresh bits from the OS: nothing the coordinator knows
    (run seed, round, partner id, model, data shape) determines what it draws next."""
    return generator.manual_seed(int.from_bytes(os.urandom(8), "little"))


class Rows(TensorDataset):
    """The training tensors, fetched a batch at a time: `__getitems__` takes a batch's
    indices and returns the batch by one index per tensor, where a plain TensorDataset is
    indexed row by row and collated (`ShuffledBatches`, `PoissonBatches`)."""

    def __getitems__(self, indices: list[int] | torch.Tensor) -> tuple[torch.Tensor, ...]:
        at = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t.index_select(0, at) for t in self.tensors)  # a third of `t[at]`'s time on one thread


class ShuffledBatches:
    """Batches of a fresh permutation every epoch, without DP: what a shuffling DataLoader
    yields, without its iterator, sampler and collation (about a millisecond a round, a
    tenth of a simulated partner's message when a round is one step)."""

    def __init__(self, rows: Rows, batch_size: int, generator: torch.Generator) -> None:
        self.rows, self.batch_size, self.generator = rows, batch_size, generator

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = torch.randperm(len(self.rows), generator=self.generator)
        for at in order.split(self.batch_size):
            yield self.rows.__getitems__(at)


class PoissonBatches:
    """`steps` Poisson-sampled batches of `rows`: each row in a batch independently with
    probability `sample_rate`, what Opacus' `DPDataLoader` yields. Opacus draws a uniform
    number per row per step and hands the indices on as a Python list; this draws the
    batch's size, Binomial(rows, q), then that many distinct rows uniformly at random. It is
    the same distribution (given its size, every subset of a Poisson sample is equally
    likely), drawn in time of the batch, not of the data: on 40,000 rows the sampler was a
    quarter of a DP-SGD step of the logistic model (`benchmarks/overhead.py`)."""

    def __init__(self, rows: Rows, sample_rate: float, steps: int) -> None:
        self.rows, self.sample_rate, self.steps = rows, sample_rate, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.rows)
        for _ in range(self.steps):
            rng = np.random.default_rng(int.from_bytes(os.urandom(16), "little"))  # this batch's bits only
            size = int(rng.binomial(n, self.sample_rate))
            yield self.rows.__getitems__(torch.from_numpy(rng.choice(n, size=size, replace=False)))


def train_local(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
                lr: float, optimizer: str, seed: int, dp: DPSettings | None,
                criterion: nn.Module | None = None) -> TrainOutcome:
    """Run `epochs` × ceil(n / batch) optimiser steps; DP-SGD when `dp` is given. `seed`
    steers non-DP shuffling only: DP noise and sampling come from OS entropy. The loss is
    binary cross-entropy on the model's logit (`y` a 0/1 label, or a value task's target in
    [0, 1]: a fractional logit, `fedcrm.ml.value`) unless `criterion` is given (a
    time-to-churn model's `fedcrm.ml.survival.HazardLoss`); one row, one customer, either way."""
    if len(x) == 0:
        raise ValueError("no training rows after cleaning")
    planned, sample_rate = round_shape(len(x), batch_size, epochs)  # as the ledger will record them; refuses huge rounds
    torch.default_generator.manual_seed(seed)  # the CPU's only (see `build_model`)
    dataset = Rows(torch.from_numpy(x), torch.from_numpy(y))
    generator = torch.Generator().manual_seed(seed) if dp is None else reseed_from_os(torch.Generator())
    loader: Iterable[tuple[torch.Tensor, ...]]
    if dp is None:
        loader = ShuffledBatches(dataset, batch_size, generator)
    else:
        loader = PoissonBatches(dataset, sample_rate, planned)
    opt = _optimizer(model, optimizer, lr)
    loss_fn: nn.Module = criterion if criterion is not None else nn.BCEWithLogitsLoss()
    engine: PrivacyEngine | None = None
    train_model: nn.Module = model
    if dp is not None:
        with warnings.catch_warnings():
            # Opacus advises secure_mode (a CSPRNG) for production; see README, "Privacy".
            warnings.simplefilter("ignore")
            from opacus import PrivacyEngine

            engine = PrivacyEngine(accountant="prv")  # ε is computed from the ledger, not here
            engine.accountant.history = list(dp.history)
            # Opacus reads the sample rate (1 / batches an epoch) and expected batch size off a
            # loader over the same rows; the batches come from `PoissonBatches`, at that rate
            shape = DataLoader(dataset, batch_size=batch_size)
            private = engine.make_private(
                module=model, optimizer=opt, data_loader=shape, criterion=loss_fn,
                noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
                poisson_sampling=False, noise_generator=generator, grad_sample_mode=dp.grad_sample_mode,
            )
            if dp.grad_sample_mode == "ghost":  # the criterion runs the two backward passes
                train_model, opt, loss_fn, _ = private
            else:
                train_model, opt, _ = private
            train_model.forbid_grad_accumulation()  # as Opacus does for its own Poisson loader
    steps, total_loss, seen = 0, 0.0, 0
    train_model.train()
    while steps < planned:
        for xb, yb in loader:
            opt.zero_grad()
            if len(xb) == 0:
                # An empty Poisson batch is still a step of the mechanism: noise-only update.
                loss = train_model(torch.zeros(0, x.shape[1])).sum() * 0.0
            else:
                loss = loss_fn(train_model(xb), yb)
                total_loss += float(loss.detach()) * len(xb)
                seen += len(xb)
            loss.backward()
            if engine is not None:  # this step's noise from fresh OS bits
                reseed_from_os(generator)
            opt.step()
            steps += 1
            if steps >= planned:
                break
    base = train_model._module if hasattr(train_model, "_module") else train_model
    state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    if engine is None:
        return TrainOutcome(state, total_loss / max(seen, 1), steps, sample_rate, [])
    history = [tuple(h) for h in engine.accountant.history]
    counted = sum(n for _, _, n in history) - sum(n for _, _, n in dp.history)
    if counted != steps:  # the ledger records our count; Opacus must agree with it
        raise RuntimeError(f"Opacus counted {counted} DP steps, the training loop {steps}")
    return TrainOutcome(state, total_loss / max(seen, 1), steps, sample_rate, history)


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(x))).numpy()


@dataclass(frozen=True)
class EvalOutcome:
    metrics: HeldOutMetrics
    pos_hist: list[int]
    neg_hist: list[int]
    n: int


def evaluate_local(model: nn.Module, x: np.ndarray, y: np.ndarray) -> EvalOutcome:
    p = predict(model, x)
    pos, neg = score_histograms(y, p)
    return EvalOutcome(binary_metrics(y, p), pos, neg, len(y))

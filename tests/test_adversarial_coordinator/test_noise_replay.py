"""Issue 12, attack 1: a coordinator that knows every input it sent cannot replay the noise.

The partner trains on data whose gradients are exactly zero (no bias, all-zero features), so
its update is pure DP noise. The coordinator knows the plan seed, the round, the partner id,
the global model and the data shape: it rebuilds the noise stream the way the code before
issue 12 drew it (one `torch.Generator` seeded from those values for Poisson sampling and
noise) and subtracts it. That must leave a residual of the order of the noise itself.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedcrm.ml.training import DPSettings, train_local

ROWS, FEATURES, BATCH, EPOCHS, LR, SIGMA, CLIP = 640, 66, 64, 2, 0.5, 1.0, 1.0
PLAN_SEED, ROUND, PARTNER = 42, 1, 0
KNOWN_SEED = PLAN_SEED * 100_003 + ROUND * 1_009 + PARTNER  # how the node derived its seed before issue 12


def _global_model() -> nn.Module:
    torch.manual_seed(7)
    return nn.Linear(FEATURES, 1, bias=False)  # zero features → every per-example gradient is 0


def _data() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((ROWS, FEATURES), np.float32), np.ones((ROWS, 1), np.float32)


def _weights(model: nn.Module | dict) -> torch.Tensor:
    state = model if isinstance(model, dict) else model.state_dict()
    return torch.cat([v.flatten() for v in state.values()])


def _partner_trains() -> torch.Tensor:
    x, y = _data()
    dp = DPSettings(SIGMA, CLIP, 1e-5, [])
    out = train_local(_global_model(), x, y, epochs=EPOCHS, batch_size=BATCH, lr=LR, optimizer="sgd",
                      seed=KNOWN_SEED, dp=dp)
    return _weights(out.state_dict)


def _coordinator_replays() -> torch.Tensor:
    """The noise-only update as the pre-issue-12 node drew it, from known values only."""
    x, y = _data()
    model = _global_model()
    generator = torch.Generator().manual_seed(KNOWN_SEED)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=BATCH, generator=generator)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, opt, loader = PrivacyEngine(accountant="prv").make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=SIGMA, max_grad_norm=CLIP,
            poisson_sampling=True, noise_generator=generator)
    steps, planned = 0, EPOCHS * (ROWS // BATCH)
    while steps < planned:
        for xb, _ in loader:
            opt.zero_grad()
            (model(xb if len(xb) else torch.zeros(0, FEATURES)).sum() * 0.0).backward()
            opt.step()
            steps += 1
            if steps >= planned:
                break
    return _weights(model._module)


def _expected_noise_norm() -> float:
    """‖update‖ of pure DP-SGD noise: lr · σC / expected batch, per coordinate and step."""
    steps = EPOCHS * (ROWS // BATCH)
    return LR * SIGMA * CLIP / BATCH * float(np.sqrt(steps * FEATURES))


def test_replayed_noise_does_not_cancel() -> None:
    start = _weights(_global_model())
    trained, replayed = _partner_trains(), _coordinator_replays()
    noise = float((trained - start).norm())
    expected = _expected_noise_norm()
    assert 0.7 * expected < noise < 1.3 * expected  # the update is the noise, of the size DP-SGD adds
    residual = float((trained - replayed).norm())
    assert residual > 0.5 * expected, f"replay residual {residual:.3g} vs noise norm {expected:.3g}: noise stripped"


def test_identical_inputs_give_different_noise() -> None:
    first, second = _partner_trains(), _partner_trains()
    assert float((first - second).norm()) > 0.5 * _expected_noise_norm()


def test_non_dp_training_stays_reproducible() -> None:
    """The run seed still steers what it may steer: non-DP shuffling."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, FEATURES)).astype(np.float32)
    y = (rng.random((200, 1)) < 0.3).astype(np.float32)
    runs = [train_local(_global_model(), x, y, epochs=1, batch_size=32, lr=0.1, optimizer="sgd", seed=KNOWN_SEED,
                        dp=None).state_dict for _ in range(2)]
    assert torch.equal(_weights(runs[0]), _weights(runs[1]))

"""The local training loop's data path: a batch is fetched by one index per tensor
(`fedcrm.ml.training.Rows`), not row by row and collated; the batches are the same."""

from __future__ import annotations

import numpy as np
import torch

from fedcrm.ml.models import build_model
from fedcrm.ml.training import DPSettings, PoissonBatches, Rows, train_local


def data(n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    return x, (rng.random(n) < 1 / (1 + np.exp(-x[:, 0]))).astype(np.float32)


def test_without_dp_training_is_plain_minibatch_sgd_over_a_seeded_shuffle() -> None:
    """Without DP, same seed: `train_local` ends at the weights of the textbook loop (a
    fresh permutation from the seeded generator every epoch, cut into batches, the last
    one short), and another seed ends elsewhere."""
    x, y = data()
    ours = build_model("mlp", 5, seed=1, hidden=8)
    train_local(ours, x, y, epochs=2, batch_size=64, lr=0.5, optimizer="sgd", seed=7, dp=None)
    ref = build_model("mlp", 5, seed=1, hidden=8)
    generator = torch.Generator().manual_seed(7)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    opt, loss = torch.optim.SGD(ref.parameters(), lr=0.5), torch.nn.BCEWithLogitsLoss()
    for _ in range(2):
        for at in torch.randperm(len(x), generator=generator).split(64):
            opt.zero_grad()
            loss(ref(tx[at]), ty[at]).backward()
            opt.step()
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    other = build_model("mlp", 5, seed=1, hidden=8)
    train_local(other, x, y, epochs=2, batch_size=64, lr=0.5, optimizer="sgd", seed=8, dp=None)
    assert not torch.equal(other.state_dict()["net.0.weight"], ours.state_dict()["net.0.weight"])


def test_a_batch_is_the_rows_it_names_and_an_empty_one_keeps_its_width() -> None:
    x, y = data(10)
    rows = Rows(torch.from_numpy(x), torch.from_numpy(y))
    xb, yb = rows.__getitems__([3, 1, 3])
    assert torch.equal(xb, torch.from_numpy(x[[3, 1, 3]])) and torch.equal(yb, torch.from_numpy(y[[3, 1, 3]]))
    empty = rows.__getitems__([])
    assert empty[0].shape == (0, 5) and empty[1].shape == (0,)


def test_poisson_batches_are_poisson_samples_from_fresh_bits() -> None:
    """Each row in a batch independently with probability q: batch sizes Binomial(n, q)
    (mean and variance, not a fixed size), every row equally often, no row twice in a
    batch, and two trainings' draws differ (OS entropy, not a seed)."""
    n, q, draws = 200, 0.1, 4000
    rows = Rows(torch.arange(n), torch.zeros(n))
    batches = [b[0] for b in PoissonBatches(rows, q, draws)]
    sizes = np.array([len(b) for b in batches])
    assert abs(sizes.mean() - n * q) < 0.5 and 15 < sizes.var() < 21  # 20 and 18
    assert all(len(set(b.tolist())) == len(b) for b in batches)
    seen = np.bincount(torch.cat(batches).numpy(), minlength=n)
    assert seen.min() > 300 and seen.max() < 500  # 400 each
    again = [b[0] for b in PoissonBatches(rows, q, 50)]
    assert any(not torch.equal(a, b) for a, b in zip(batches, again))


def test_dp_training_through_opacus_counts_every_step() -> None:
    """Opacus' optimiser over our Poisson batches: every planned step is taken and
    accounted, at the rate the ledger records."""
    x, y = data(200)
    model = build_model("logistic", 5, seed=0)
    out = train_local(model, x, y, epochs=3, batch_size=8, lr=0.5, optimizer="sgd", seed=0,
                      dp=DPSettings(1.0, 1.0, 1e-5, []))
    assert out.steps == 3 * 25 and sum(n for _, _, n in out.history) == out.steps


def test_mlps_train_with_ghost_clipping_and_its_steps_are_counted() -> None:
    """The node's choice for MLPs (`grad_sample_mode`): ghost clipping, through empty
    Poisson batches too (batch 1 of 200 rows), for a 0/1 label and a time-to-churn model
    (whose loss gives Opacus its per-customer losses)."""
    from fedcrm.ml import survival
    from fedcrm.ml.training import grad_sample_mode

    assert grad_sample_mode("mlp") == "ghost" and grad_sample_mode("logistic") == "hooks"
    x, y = data(200)
    dp = DPSettings(1.0, 1.0, 1e-5, [], grad_sample_mode="ghost")
    out = train_local(build_model("mlp", 5, hidden=8), x, y, epochs=2, batch_size=1, lr=0.1, optimizer="sgd", seed=0,
                      dp=dp)
    assert out.steps == 400 and sum(n for _, _, n in out.history) == 400
    periods = np.random.default_rng(1).integers(1, 5, 200).astype(np.float32)
    model = build_model("mlp", 5, hidden=8, periods=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = train_local(model, x, periods, epochs=2, batch_size=16, lr=0.1, optimizer="sgd", seed=0, dp=dp,
                      criterion=survival.HazardLoss())
    assert out.steps == 26 and not torch.equal(out.state_dict["periods.weight"], before["periods.weight"])

"""Issue 12, attack 5: no run config can make a node exhaust its memory or time.

`dp-target-epsilon = 1e6` and `stats-noise-multiplier = 1e-4` used to end in a MemoryError
(Opacus' PRV accountant building a 265 GiB grid for a tiny noise multiplier). The node must
refuse them quickly with a FedcrmError, and the ClientApp must turn that into an error
reply with a code. A memory ceiling makes the old failure quick instead of thrashing.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import app as client_app
from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.data.layout import standard_layout
from fedcrm.errors import FedcrmError
from fedcrm.ml.models import build_model
from fedcrm.node.partner import PartnerNode
from fedcrm.protocol import ERROR_BUDGET, ERROR_FEDCRM
from tests.conftest import set_privacy

HOSTILE = [{"dp-target-epsilon": 1e6}, {"stats-noise-multiplier": 1e-4}, {"num-server-rounds": 10**9},
           {"local-epochs": 10**6}, {"batch-size": 1}, {"model": "mlp", "model-hidden": 10**6},
           {"model": "mlp", "model-hidden": 1024, "batch-size": 4096}, {"round-timeout": 1e12},
           {"client-dp-noise-multiplier": 1e-6}]
SECONDS = 20


@contextmanager
def memory_ceiling(extra_gib: int = 4) -> Iterator[None]:
    """Cap this process' address space a few GiB above its current size for the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + (extra_gib << 30), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _partner(fresh_demo: Path) -> PartnerConfig:
    return PartnerConfig.load(FederationConfig.load(fresh_demo).members[0].config)


def _state() -> dict:
    return build_model("logistic", len(standard_layout().names())).state_dict()


@pytest.mark.parametrize("call", ["train", "feature_sums", "plan_run"])
def test_node_refuses_hostile_run_configs(fresh_demo: Path, call: str) -> None:
    cfg = _partner(fresh_demo)
    for run_config in HOSTILE:
        started = time.monotonic()
        with memory_ceiling(), pytest.raises(FedcrmError):
            node = PartnerNode(cfg, TrainPlan.from_run_config(run_config))
            {"train": lambda: node.train(_state(), 1, "r1"), "feature_sums": lambda: node.feature_sums("r1"),
             "plan_run": lambda: node.plan_run("r1")}[call]()
        assert time.monotonic() - started < SECONDS, run_config


def test_accountant_refuses_what_it_cannot_bound(fresh_demo: Path) -> None:
    """Behind the plan's bounds: the accountant itself never builds an unbounded grid, and
    calibration never goes below the noise floor."""
    from fedcrm.privacy.accounting import SIGMA_MIN, UnaccountableRelease, calibrate_noise, epsilon

    started = time.monotonic()
    with memory_ceiling():
        with pytest.raises(UnaccountableRelease):
            epsilon([(1e-4, 1.0, 1)], 1e-5)
        with pytest.raises(UnaccountableRelease):
            epsilon([(1.0, 0.01, 10**9)], 1e-5)
        assert calibrate_noise((), 0.1, 20, 1e6, 1e-5) == SIGMA_MIN
        # a partner who allows exact statistics: the run's σ is the one used, and it is absurd
        cfg = _partner(fresh_demo)
        set_privacy(cfg.source, min_stats_noise_multiplier=0.0)
        node = PartnerNode(PartnerConfig.load(cfg.source), TrainPlan.model_construct(stats_noise_multiplier=1e-4))
        with pytest.raises(UnaccountableRelease):  # a plan that skipped validation is still refused
            node.feature_sums("r1")
    assert time.monotonic() - started < SECONDS
    assert node.account.entries() == []  # nothing was released or charged


def _message(kind: str) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 78, 6, 1
    content = {"config": ConfigRecord({"server-round": 1})}
    if kind != MessageType.QUERY:
        content["arrays"] = ArrayRecord(_state())
    return Message(content=RecordDict(content), dst_node_id=6, message_type=kind)


@pytest.mark.parametrize("run_config", [{"dp-target-epsilon": 1e6}, {"stats-noise-multiplier": 1e-4}])
@pytest.mark.parametrize("kind", [MessageType.TRAIN, MessageType.QUERY])
def test_client_app_replies_with_an_error_code(fresh_demo: Path, run_config: dict, kind: str) -> None:
    context = Context(run_id=78, node_id=6, node_config={"partner-config": str(FederationConfig.load(fresh_demo)
                                                                              .members[0].config)},
                      state=RecordDict(), run_config={"num-server-rounds": 2, **run_config})
    started = time.monotonic()
    with memory_ceiling():
        reply = client_app(_message(kind), context)
    assert time.monotonic() - started < SECONDS
    assert reply.has_error() and reply.error.code in (ERROR_FEDCRM, ERROR_BUDGET), reply.error
    assert "run config" in reply.error.reason

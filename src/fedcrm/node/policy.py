"""The partner's privacy policy, applied to what a run asks of the node.

The coordinator controls the run config and may be malicious: every release (a training
round, an evaluation, the statistics query) is first checked here against the partner's
own `PrivacyPolicy`, and refused, with a plain reason, before any data is prepared or any
budget is charged. Every refusal is logged on the node (`work/refusals.jsonl`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fedcrm.config import PrivacyPolicy, TrainPlan
from fedcrm.config.partner import ReleaseKind
from fedcrm.errors import PolicyRefusal
from fedcrm.privatefiles import private_append_line, private_dir

REFUSALS_LOG = "refusals.jsonl"


def violations(plan: TrainPlan, policy: PrivacyPolicy, kind: ReleaseKind, server_round: int | None = None) -> list[str]:
    """Every way the run (and, for training, its round) is outside the policy; empty if none.

    The run-level rules apply to every kind: a partner does not take part in a run it
    would refuse to train in. The run config's `test-fraction` is never consulted: the
    node's hold-out is `policy.holdout_fraction`."""
    reasons = []
    if kind not in policy.releases:
        reasons.append(f"this partner does not release '{kind}' (allowed: {', '.join(policy.releases) or 'nothing'})")
    if not plan.dp_enabled and policy.dp_required:
        reasons.append("the run turns DP-SGD off (dp-enabled = false) and this partner requires DP")
    if policy.max_run_epsilon is not None:
        if not plan.dp_enabled:
            reasons.append(f"a run without DP has no ε bound; this partner allows at most ε {policy.max_run_epsilon:g} per run")
        elif plan.dp_target_epsilon > policy.max_run_epsilon:
            reasons.append(f"the run asks for ε {plan.dp_target_epsilon:g} (dp-target-epsilon); this partner allows "
                           f"at most ε {policy.max_run_epsilon:g} per run")
    if kind == "evaluate" and server_round is not None and server_round not in plan.evaluation_rounds():
        reasons.append(f"round {server_round} is not one of the evaluations the run declared (rounds "
                       f"{', '.join(map(str, plan.evaluation_rounds()))}; evaluate-every {plan.evaluate_every}): "
                       "the node calibrated its evaluation noise to those")
    if kind == "baseline" and not plan.local_baseline:
        reasons.append("the run did not declare a local-only baseline (local-baseline): the node planned its "
                       "releases without one")
    if policy.max_rounds is not None:
        if plan.num_server_rounds > policy.max_rounds:
            reasons.append(f"the run asks for {plan.num_server_rounds} rounds (num-server-rounds); this partner allows "
                           f"at most {policy.max_rounds}")
        elif server_round is not None and server_round > policy.max_rounds:
            reasons.append(f"round {server_round} of the run; this partner allows at most {policy.max_rounds} rounds")
    return reasons


def check(plan: TrainPlan, policy: PrivacyPolicy, kind: ReleaseKind, server_round: int | None = None) -> None:
    """Raise `PolicyRefusal` if the run is outside the partner's policy."""
    reasons = violations(plan, policy, kind, server_round)
    if reasons:
        raise PolicyRefusal(kind, "; ".join(reasons))


def check_holdout(rows: int, policy: PrivacyPolicy) -> None:
    """Evaluation only on a hold-out of at least `policy.min_holdout_rows` rows."""
    if rows < policy.min_holdout_rows:
        raise PolicyRefusal("evaluate", f"the hold-out has {rows} rows; this partner evaluates only on at least "
                                        f"{policy.min_holdout_rows} (min_holdout_rows)")


def log_refusal(work_dir: Path, run_id: str | None, refusal: PolicyRefusal) -> None:
    """Append the refusal to the node's own log: when, which run, which release, why."""
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_id": run_id, "kind": refusal.kind,
            "reason": refusal.reason}
    private_dir(work_dir)  # a node log, owner-only like the egress and error logs
    private_append_line(work_dir / REFUSALS_LOG, json.dumps(line))

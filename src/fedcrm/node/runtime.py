"""Which partner a ClientApp serves, and its one `PartnerNode` per run.

A simulated node answers every message of a run in the same long-lived process (Ray
actors are reused); a deployed SuperNode starts a fresh process per message. Either way
the node for a (run, Flower node) is built once per process: its plan parsed once, its
data prepared once, its ledger opened once. The node checks every request against its
partner's privacy policy itself (`fedcrm.node.policy`), whatever the run config says.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from flwr.app import Context

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.errors import ConfigError
from fedcrm.node.partner import PartnerNode
from fedcrm.protocol import NodeConfig, wire_key

MAX_NODES = 1024  # one simulation process may serve this many partners' nodes at once
_NODES: OrderedDict[tuple[object, ...], PartnerNode] = OrderedDict()


def resolve_partner_config(node_config: dict[str, Any], plan: TrainPlan) -> PartnerConfig:
    """Deployment: the node config names the partner config. Simulation: partition i of
    the federation config. Either way the node only ever opens its own partner's files."""
    node = NodeConfig.from_dict(node_config)
    if node.partner_config:
        return PartnerConfig.load(node.partner_config)
    if node.partition_id is not None and plan.federation_config:
        members = FederationConfig.load(plan.federation_config).members
        if node.partition_id >= len(members) or members[node.partition_id].config is None:
            raise ConfigError(f"simulated node {node.partition_id}: federation config has no partner config for it")
        return PartnerConfig.load(members[node.partition_id].config)
    raise ConfigError(f"node has no partner config: set node config '{NodeConfig.key('partner_config')}' "
                      f"(deployment) or run config '{wire_key('federation_config')}' (simulation)")


def node_for(run_id: int, node_id: int, node_config: dict[str, Any], run_config: dict[str, Any]) -> PartnerNode:
    """The node serving Flower node `node_id` in run `run_id`, built on first use (and
    again if the configs it was built from are not the ones this message names)."""
    key = (int(run_id), int(node_id), repr(sorted(node_config.items())), repr(sorted(run_config.items())))
    node = _NODES.get(key)
    if node is None:
        plan = TrainPlan.from_run_config(run_config)
        node = _NODES[key] = PartnerNode(resolve_partner_config(node_config, plan), plan, run_id=run_id)
        while len(_NODES) > MAX_NODES:
            _NODES.popitem(last=False)
    _NODES.move_to_end(key)
    return node


def node_for_context(context: Context) -> PartnerNode:
    return node_for(context.run_id, context.node_id, dict(context.node_config), dict(context.run_config))

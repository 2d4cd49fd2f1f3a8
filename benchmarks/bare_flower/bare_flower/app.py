"""FedAvg over one small model: each partner takes one SGD step on its own random rows
per round and evaluates the global model; the ServerApp marks the time every round's
global evaluation lands (`marks`: a folder, one file per round), so round times are read
the same way as fedcrm's (its per-round checkpoints), without polling Flower."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

client = ClientApp()
server = ServerApp()


def model(width: int, hidden: int) -> torch.nn.Module:
    if hidden:
        return torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    return torch.nn.Linear(width, 1)


def rows(context: Context) -> tuple[torch.Tensor, torch.Tensor]:
    # simulation numbers the nodes; a deployed SuperNode (fedcrm's, naming its partner
    # config) has no partition id, and its Flower node id stands in
    gen = torch.Generator().manual_seed(int(context.node_config.get("partition-id", context.node_id % 2**31)))
    n, width = int(context.run_config["rows"]), int(context.run_config["width"])
    x = torch.randn(n, width, generator=gen)
    return x, (x[:, 0] > 0).float()


def local(msg: Message, context: Context) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    net = model(int(context.run_config["width"]), int(context.run_config["hidden"]))
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    return (net, *rows(context))


@client.train()
def train(msg: Message, context: Context) -> Message:
    net, x, y = local(msg, context)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(1), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    content = RecordDict({"arrays": ArrayRecord(net.state_dict()),
                          "metrics": MetricRecord({"train-loss": float(loss), "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    net, x, y = local(msg, context)
    with torch.no_grad():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(1), y)
    return Message(content=RecordDict({"metrics": MetricRecord({"loss": float(loss), "num-examples": len(y)})}),
                   reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    marks = Path(str(context.run_config["marks"]))
    marks.mkdir(parents=True, exist_ok=True)

    def mark(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        (marks / f"round-{server_round:03d}").write_text(f"{time.time()}\n")
        return None

    nodes = int(context.run_config["nodes"])
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=nodes, min_evaluate_nodes=nodes,
                      min_available_nodes=nodes)
    net = model(int(context.run_config["width"]), int(context.run_config["hidden"]))
    strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()),
                   num_rounds=int(context.run_config["num-server-rounds"]), evaluate_fn=mark)

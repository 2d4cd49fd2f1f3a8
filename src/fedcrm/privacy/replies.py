"""The node's copy of each DP release it sent, so a round can be answered again for free.

Sending the same output twice is post-processing: it costs no privacy. When a coordinator
is restarted mid-round and resumes, the partner may be asked again for a round its ledger
already charged; if the global model it is asked about is the one it trained on, the node
re-sends the kept reply instead of training (and spending) again. For any other input it
refuses, as before.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from fedcrm.privatefiles import private_dir, private_open

Metrics = dict[str, object]  # a reply record's dict (`fedcrm.protocol.TrainReply.to_dict`)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ReplyCache:
    def __init__(self, folder: Path) -> None:
        self.dir = folder

    def path(self, run_id: str, server_round: int, kind: str = "train") -> Path:
        suffix = "" if kind == "train" else f"-{kind}"
        return self.dir / f"run-{run_id}-round-{server_round:04d}{suffix}.pt"

    def save(self, run_id: str, server_round: int, received: dict[str, torch.Tensor],
             sent: dict[str, torch.Tensor], metrics: Metrics, kind: str = "train") -> Path:
        private_dir(self.dir)
        path = self.path(run_id, server_round, kind)
        tmp = path.with_suffix(".tmp")
        with private_open(tmp, "wb") as fh:
            torch.save({"received": state_digest(received), "state": sent, "metrics": metrics}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        return path

    def load(self, run_id: str, server_round: int, received: dict[str, torch.Tensor],
             kind: str = "train") -> tuple[dict, Metrics] | None:
        path = self.path(run_id, server_round, kind)
        if not path.is_file():
            return None
        kept = torch.load(path, weights_only=True)
        if kept["received"] != state_digest(received):
            return None
        return kept["state"], kept["metrics"]

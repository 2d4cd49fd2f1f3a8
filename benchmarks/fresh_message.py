"""One message of a deployed partner, answered in this fresh process as `flwr-clientapp`
answers it (one process per message: `flwr/supernode/runtime/run_clientapp.py` pulls one
task and exits). Run by `benchmarks/overhead.py` (`fresh_messages`), not by hand:

    python benchmarks/fresh_message.py KIND PARTNER_TOML ROUND STATE_FILE RUN_CONFIG_JSON RUN_ID

Prints one JSON line: seconds importing the ClientApp (torch, Flower, fedcrm), seconds
answering, and whether the answer loaded Opacus (DP-SGD's engine, or its accountants for
a release's ε) or the data pipeline's pandas (a message answered from the cached arrays
does not). A train message's reply arrays replace STATE_FILE, as the next round's
global model would.
"""

from __future__ import annotations

import json
import sys
import time

t0 = time.perf_counter()
import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from clients.client_app import app  # noqa: E402

imported = time.perf_counter() - t0


def message(message_type: str, node_id: int, server_round: int, arrays: ArrayRecord, run_id: int) -> Message:
    """The message the coordinator would send `node_id` in `server_round`, made outside a
    ClientApp call: such a Message takes its ids from Flower's task identity."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, node_id, server_round
    return Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})}),
                   dst_node_id=node_id, message_type=message_type)


def main() -> None:
    kind, partner, server_round, state_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    run_config, run_id = json.loads(sys.argv[5]), int(sys.argv[6])
    t1 = time.perf_counter()
    arrays = ArrayRecord(torch.load(state_file))
    msg = message(MessageType.TRAIN if kind == "train" else MessageType.EVALUATE, 5, server_round, arrays, run_id)
    context = Context(run_id=run_id, node_id=5, node_config={"partner-config": partner}, state=RecordDict(),
                      run_config=run_config)
    reply = app(msg, context)
    answered = time.perf_counter() - t1
    if reply.has_error():
        raise SystemExit(f"{kind} round {server_round}: {reply.error.reason}")
    if kind == "train":
        torch.save(reply.content["arrays"].to_torch_state_dict(), state_file)
    print(json.dumps({"kind": kind, "round": server_round, "import_s": round(imported, 2),
                      "answer_s": round(answered, 2), "opacus_loaded": "opacus" in sys.modules,
                      "pandas_loaded": "pandas" in sys.modules}))


if __name__ == "__main__":
    main()

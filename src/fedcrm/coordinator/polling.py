"""How often the ServerApp asks the SuperLink for replies.

Flower's deployed grid (`flwr.superlink.grid.http_grid`) pushes a round's messages, then
pulls for their replies every 3 s, a constant in its code; the simulation's in-memory grid
pulls every 0.1 s. On a deployment each exchange therefore waits up to 3 s after the last
reply has landed, twice a round (train, evaluate). `PromptGrid` is the same grid with the
pull loop at `pull_interval` (the run config's `pull-interval`): a pull is one small
request to the SuperLink, so 0.5 s costs it two requests a second while a round runs and
takes up to 2.5 s off each exchange.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid


class PromptGrid(Grid):
    """A grid that pulls replies every `pull_interval` seconds; everything else is the
    wrapped grid's."""

    def __init__(self, grid: Grid, pull_interval: float) -> None:
        self.grid, self.pull_interval = grid, pull_interval

    def set_run(self, run) -> None:  # noqa: ANN001 (flwr.supercore.run.Run)
        self.grid.set_run(run)

    @property
    def run(self):  # noqa: ANN201
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Flower's loop (push, then pull until every reply is in or `timeout` passes),
        pulling every `pull_interval` seconds."""
        waiting = set(self.push_messages(messages))
        end = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while timeout is None or time.time() < end:
            got = list(self.pull_messages(waiting))
            replies.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            if not waiting:
                break
            time.sleep(self.pull_interval)
        return replies


def prompt(grid: Grid, pull_interval: float) -> Grid:
    """The deployed grid with a shorter pull interval; the simulation's (it pulls every
    0.1 s already) as it is."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    return grid if isinstance(grid, InMemoryGrid) else PromptGrid(grid, pull_interval)

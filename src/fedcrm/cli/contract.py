"""`fedcrm contract`: draft the consortium's data contract from an export; and
`partner_map`, the body of `fedcrm partner map` (a partner's mapping onto a contract)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fedcrm.cli.common import console, typer_app
from fedcrm.errors import FedcrmError

app = typer_app("The consortium's data contract: fields, features and tasks as data.")


@app.callback()
def contract_group() -> None:
    """The consortium's data contract: fields, features and tasks as data."""


class DraftTask(StrEnum):
    churn = "churn"
    propensity = "propensity"


DelimiterOpt = Annotated[str | None, typer.Option(
    help="the export's delimiter (default: sniffed among , ; tab |); 'whitespace' for whitespace-separated files")]
ForceOpt = Annotated[bool, typer.Option("--force", help="overwrite --out if it exists")]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", emoji=False, highlight=False)
    return typer.Exit(2)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise _fail(f"{out} exists; not overwritten (give --force to replace it)")
    if out.exists() and out.is_dir():
        raise _fail(f"{out} is a folder; --out names the file to write")
    if not out.parent.is_dir():
        raise _fail(f"no folder {out.parent} to write {out.name} into")


@app.command("draft")
def contract_draft(
    data: Annotated[Path, typer.Option(help="a sample export (CSV, CSV.gz or Parquet)")],
    id_column: Annotated[str, typer.Option("--id", help="the export's customer id column")],
    label: Annotated[str, typer.Option(help="the export's label column (yes/no, 1/0, true/false)")],
    task: Annotated[DraftTask, typer.Option(help="what the label means")],
    delimiter: DelimiterOpt = None,
    out: Annotated[Path, typer.Option(help="the contract file to write")] = Path("contract.toml"),
    force: ForceOpt = False,
) -> None:
    """Draft a contract from one export: a field per column with its kind and a cautious
    grade, and `# REVIEW:` comments on every guess a person must confirm."""
    from rich.table import Table

    from fedcrm.contract.draft import infer_draft, summary_rows
    from fedcrm.contract.model import Contract

    _check_out(out, force)
    try:
        draft = infer_draft(data, id_column, label, task.value, delimiter)
        text = draft.toml()
        contract = Contract.loads(text, source=out)
    except FedcrmError as exc:
        raise _fail(str(exc)) from None
    table = Table(title=f"{data.name}: {len(draft.guesses)} columns", title_justify="left")
    for col in ("column", "field", "kind", "grade", "reaches the model"):
        table.add_column(col)
    for row in summary_rows(draft):
        table.add_row(*row)
    console.print(table)
    reviews = sum(len(g.review) for g in draft.guesses) + 1
    out.write_text(text, encoding="utf-8")
    console.print(f"contract {contract.name!r}: {len(contract.fields)} fields, {len(contract.features())} features, "
                  f"task {task.value!r}; {reviews} REVIEW notes to go through in {out} (digest {contract.digest()[:12]})",
                  emoji=False, highlight=False)


def partner_map(
    contract: Annotated[Path, typer.Option(help="the consortium's contract (contract.toml)")],
    data: Annotated[Path, typer.Option(help="this partner's customer export (CSV, CSV.gz or Parquet)")],
    name: Annotated[str, typer.Option(help="the partner's name (lower case, digits, - and _)")],
    partner_id: Annotated[int, typer.Option(help="the partner's member number in the consortium")],
    delimiter: DelimiterOpt = None,
    events: Annotated[list[Path] | None, typer.Option(
        "--events", help="a purchases or interactions export beside --data, mapped onto the contract's event "
                         "table it fits (repeat for both; delimiter sniffed)")] = None,
    out: Annotated[Path, typer.Option(help="the partner config to write")] = Path("partner.toml"),
    force: ForceOpt = False,
) -> None:
    """Draft this partner's config: its export's columns mapped onto the contract's fields,
    date formats, money unit and spellings inferred, `# REVIEW:` on every guess."""
    import re

    from rich.table import Table

    from fedcrm.contract.mapping import draft_mapping
    from fedcrm.contract.model import Contract

    if not re.match(r"^[a-z0-9][a-z0-9_-]*$", name):
        raise _fail(f"--name {name!r}: a partner name is lower case letters, digits, - and _")
    if partner_id < 0:
        raise _fail(f"--partner-id {partner_id}: a member number is 0 or more")
    _check_out(out, force)
    try:
        draft = draft_mapping(Contract.load(contract), data, delimiter, events=events or [])
        text = draft.toml(name, partner_id, base=out.parent)
    except FedcrmError as exc:
        raise _fail(str(exc)) from None
    sources = " + ".join(p.name for p in [data, *(events or [])])
    table = Table(title=f"{sources} onto contract {draft.contract.name!r}", title_justify="left")
    for col in ("table", "contract field", "export column", "matched by"):
        table.add_column(col)
    for t in draft.tables:
        for field_name, col in t.columns.items():
            table.add_row(t.table, field_name, col, t.how[field_name])
    console.print(table)
    for line in draft.leftovers():
        console.print(f"  not mapped: {line}", emoji=False, highlight=False)
    out.write_text(text, encoding="utf-8")
    mapped = sum(len(t.columns) for t in draft.tables)
    console.print(f"partner {name}: {mapped} fields mapped; wrote {out} (go through its REVIEW comments, "
                  f"then `fedcrm partner init --config {out}`)", emoji=False, highlight=False)

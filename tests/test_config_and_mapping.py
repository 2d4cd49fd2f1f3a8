"""Partner mappings: a wrong mapping is a clear error naming partner, file and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.errors import ConfigError, DataError, MappingError
from fedcrm.data.prepare import prepare


def write_partner(folder: Path, columns: str, csv_text: str, extra: str = "", delimiter: str = ",") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.csv").write_text(csv_text)
    key = folder / "secret.key"
    key.write_text("ab" * 32)
    key.chmod(0o600)
    cfg = folder / "partner.toml"
    cfg.write_text(f'''name = "acme"
partner_id = 9
work_dir = "work"
secret_file = "secret.key"
as_of = "2026-01-01"
[customers]
path = "data.csv"
delimiter = "{delimiter}"
{extra}
[customers.columns]
{columns}
''')
    return cfg


GOOD_COLUMNS = 'customer_id = "id"\nmonthly_spend = "spend"\nchurned = "left"'


def test_missing_column_names_partner_file_and_column(tmp_path: Path) -> None:
    cfg = write_partner(tmp_path, 'customer_id = "id"\nmonthly_spend = "Spend_EUR"\nchurned = "left"',
                        "id,spend,left\n1,10,yes\n")
    with pytest.raises(MappingError) as err:
        prepare(PartnerConfig.load(cfg), "churn")
    msg = str(err.value)
    assert "acme" in msg and "data.csv" in msg and "Spend_EUR" in msg and "monthly_spend" in msg
    assert "['id', 'spend', 'left']" in msg  # tells the partner what the file does have


def test_wrong_delimiter_gets_a_hint(tmp_path: Path) -> None:
    cfg = write_partner(tmp_path, GOOD_COLUMNS, "id;spend;left\n1;10;yes\n")
    with pytest.raises(MappingError, match="delimiter"):
        prepare(PartnerConfig.load(cfg), "churn")


def test_unknown_canonical_field_is_a_config_error(tmp_path: Path) -> None:
    cfg = write_partner(tmp_path, 'customer_id = "id"\nshoe_size = "spend"', "id,spend\n1,10\n")
    with pytest.raises(ConfigError, match="shoe_size"):
        PartnerConfig.load(cfg)


def test_task_without_label_source_is_a_mapping_error(tmp_path: Path) -> None:
    cfg = write_partner(tmp_path, GOOD_COLUMNS, "id,spend,left\n1,10,yes\n")
    with pytest.raises(MappingError, match="responded"):
        prepare(PartnerConfig.load(cfg), "propensity")


def test_empty_file_and_ragged_rows_name_the_file(tmp_path: Path) -> None:
    cfg = write_partner(tmp_path / "a", GOOD_COLUMNS, "")
    with pytest.raises(DataError, match="empty"):
        prepare(PartnerConfig.load(cfg), "churn")
    cfg = write_partner(tmp_path / "b", GOOD_COLUMNS, "id,spend,left\n1,10,yes\n2,20,no,EXTRA\n")
    with pytest.raises(DataError) as err:
        prepare(PartnerConfig.load(cfg), "churn")
    assert "data.csv" in str(err.value) and "row 2" in str(err.value)


def test_paths_resolve_relative_to_the_config(demo_federation: Path) -> None:
    fed = FederationConfig.load(demo_federation)
    assert [m.partner_id for m in fed.members] == [1, 2, 3]
    cfg = PartnerConfig.load(fed.members[0].config)
    assert cfg.customers.path.is_absolute() and cfg.customers.path.is_file()
    assert cfg.work_dir == fed.members[0].config.parent / "work"


def test_example_configs_parse() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = PartnerConfig.load(root / "partner.example.toml")
    assert cfg.customers.money_unit == "cents" and cfg.identifier_columns == ["full_name", "phone"]
    fed = FederationConfig.load(root / "federation.example.toml")
    assert fed.names() == {1: "north-telecom", 2: "east-mobile", 3: "south-broadband"}


def test_configs_are_parsed_once_and_edits_are_seen(tmp_path: Path) -> None:
    """Simulated nodes load configs per message, so loads are cached; the cache is keyed by
    content, so a partner's edit is seen at once, even a same-size rewrite in the same tick."""
    cfg = write_partner(tmp_path / "p", GOOD_COLUMNS, "id,spend,left\n1,10,yes\n")
    first = PartnerConfig.load(cfg)
    assert PartnerConfig.load(str(cfg)) is first  # same file, same content: parsed once
    for cap in (4.0, 5.0, 4.0):  # same size each time, written back to back
        text = cfg.read_text()
        cfg.write_text(text.replace("[customers]", f"[privacy]\nepsilon_cap = {cap}\n[customers]", 1)
                       if "[privacy]" not in text else
                       text.replace(text[text.index("epsilon_cap"):text.index("\n", text.index("epsilon_cap"))],
                                    f"epsilon_cap = {cap}"))
        assert PartnerConfig.load(cfg).privacy.epsilon_cap == cap
    cfg.unlink()
    with pytest.raises(ConfigError, match="config file not found"):
        PartnerConfig.load(cfg)

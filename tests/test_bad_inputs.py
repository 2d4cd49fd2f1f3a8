"""The bad-input corpus: each case gets a clear error or a quarantine reason, and no row
is ever lost (rows in = rows kept + rows quarantined)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.config import PartnerConfig
from fedcrm.errors import DataError
from fedcrm.data.quality import check_partner
from tests.test_config_and_mapping import write_partner

COLUMNS = ('customer_id = "id"\nfull_name = "name"\nsignup_date = "since"\n'
           'monthly_spend = "spend"\ninteractions = "calls"\nchurned = "left"')
EXTRA = 'date_formats = ["%Y-%m-%d", "%d/%m/%Y", "%Y%m%d"]'
HEADER = "id,name,since,spend,calls,left\n"


def check(tmp_path: Path, body: str) -> tuple[dict, pd.DataFrame]:
    cfg = PartnerConfig.load(write_partner(tmp_path, COLUMNS, HEADER + body, extra=EXTRA))
    report = check_partner(cfg, "churn").cleaning
    assert report.rows_in == report.rows_clean + report.rows_quarantined
    return report.model_dump(), cfg


CASES = {
    "wrong types": ("1,Ann,2024-01-01,abc,2,yes\n2,Bo,2024-01-01,10,two,no\n3,Cy,2024-01-01,10,1,maybe\n",
                    {"rows_clean": 2, "unreadable_by_field": {"monthly_spend": 1, "interactions": 1, "churned": 1},
                     "reasons": {"to be supplemented: churned missing or unreadable": 1}}),
    "unicode names": ("1,Zoë Müller,2024-01-01,10,1,yes\n2,王小明,2024-01-01,12,0,no\n3,José Ñúñez,2024-01-01,11,0,no\n",
                      {"rows_clean": 3, "reasons": {}}),
    "negative amounts": ("1,A,2024-01-01,-5,1,yes\n2,B,2024-01-01,10,-1,no\n3,C,2024-01-01,10,1,no\n",
                         {"rows_clean": 1, "reasons": {"abnormal: negative monthly_spend": 1, "abnormal: negative interactions": 1}}),
    "future dates": ("1,A,2031-01-01,10,1,yes\n2,B,2024-01-01,10,1,no\n",
                     {"rows_clean": 1, "reasons": {"abnormal: signup_date in the future": 1}}),
    "mixed date formats": ("1,A,2024-01-31,10,1,yes\n2,B,31/01/2024,10,1,no\n3,C,20240131,10,1,no\n4,D,Jan 31 2024,10,1,no\n",
                           {"rows_clean": 4, "unreadable_by_field": {"signup_date": 1}, "reasons": {}}),
    "duplicate ids with conflicting values": ("1,A,2024-01-01,10,1,yes\n1,A,2024-01-01,99,1,no\n2,B,2024-01-01,10,1,no\n",
                                              {"rows_clean": 2, "reasons": {"duplicate: superseded by a later row": 1}}),
    "missing key field": (",A,2024-01-01,10,1,yes\n2,B,2024-01-01,10,1,\n3,C,2024-01-01,10,1,no\n",
                          {"rows_clean": 1, "reasons": {"to be supplemented: customer_id missing or unreadable": 1,
                                                         "to be supplemented: churned missing or unreadable": 1}}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_corpus(case: str, tmp_path: Path) -> None:
    body, expected = CASES[case]
    report, _ = check(tmp_path, body)
    assert report["rows_clean"] == expected["rows_clean"], report
    assert report["quarantined_by_reason"] == expected["reasons"], report
    for name, n in expected.get("unreadable_by_field", {}).items():
        assert report["unreadable_by_field"][name] == n, report


def test_wrong_type_in_a_non_key_field_is_filled_not_dropped(tmp_path: Path) -> None:
    report, _ = check(tmp_path, "1,A,2024-01-01,abc,1,yes\n2,B,2024-01-01,10,1,no\n3,C,2024-01-01,30,1,no\n")
    assert report["filled_by_field"]["monthly_spend"] == 1  # the partner's median stands in, and it is counted
    assert report["completeness_pct"]["monthly_spend"] == pytest.approx(66.67)


@pytest.mark.parametrize("body, line", [("1,A,2024-01-01,10,1,yes\n2,B,2024-01-01,10,1,no,EXTRA\n", 2),
                                        ('1,A,2024-01-01,10,1,yes\n2,"B,2024-01-01,10,1,no\n', None)])
def test_malformed_csv_names_file_and_row(tmp_path: Path, body: str, line: int | None) -> None:
    cfg = PartnerConfig.load(write_partner(tmp_path, COLUMNS, HEADER + body, extra=EXTRA))
    with pytest.raises(DataError) as err:
        check_partner(cfg, "churn")
    assert "data.csv" in str(err.value) and "malformed CSV" in str(err.value)
    if line is not None:
        assert f"row {line}" in str(err.value)


def test_missing_and_unreadable_dates_still_prepare(tmp_path: Path) -> None:
    """A gap in a non-key date must not reach the feature matrix as NaN."""
    from fedcrm.data.prepare import prepare

    body = "1,A,,10,1,yes\n2,B,someday,10,1,no\n3,C,2024-01-31,12,1,no\n4,D,2023-05-01,9,0,yes\n"
    cfg = PartnerConfig.load(write_partner(tmp_path, COLUMNS, HEADER + body, extra=EXTRA))
    data = prepare(cfg, "churn", test_fraction=0.01)
    assert data.summary.cleaning.rows_clean == 4
    assert np.isfinite(data.x_train).all()


def test_a_header_only_file_names_the_file(tmp_path: Path) -> None:
    cfg = PartnerConfig.load(write_partner(tmp_path, COLUMNS, HEADER))
    with pytest.raises(DataError, match=r"data\.csv: has a header \(6 columns\) but no data rows"):
        check_partner(cfg, "churn")


def test_a_nested_parquet_column_names_file_and_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = write_partner(tmp_path, 'customer_id = "id"\nmonthly_spend = "spend"\nchurned = "left"', "id\n1\n")
    pq.write_table(pa.table({"id": ["1", "2"], "spend": [[1.0, 2.0], [3.0]], "left": ["yes", "no"]}),
                   tmp_path / "c.parquet")
    path.write_text(path.read_text().replace('path = "data.csv"', 'path = "c.parquet"'))
    with pytest.raises(DataError, match=r"c\.parquet, column 'spend': holds .* nested Parquet column"):
        check_partner(PartnerConfig.load(path), "churn")


def test_whitespace_exports_ordinal_codes_and_case_folded_ids(tmp_path: Path) -> None:
    """A fixed-width-looking export, a contact-level code that means a number, and ids whose
    case differs between exports of the same customer."""
    body = "id   spend  calls  left\nAB1  10     high   yes\nab1  12     Low    no\nCD2  17.5   2      no\nEF3  9      lots   no\n"
    extra = 'id_case = "lower"\n[customers.codes]\ninteractions = {high = 5, low = 1}'
    columns = 'customer_id = "id"\nmonthly_spend = "spend"\ninteractions = "calls"\nchurned = "left"'
    path = write_partner(tmp_path, columns, body, extra=extra, delimiter="whitespace")
    cfg = PartnerConfig.load(path)
    report = check_partner(cfg, "churn").cleaning
    assert report.rows_in == 4 and report.duplicates == 1  # AB1 and ab1 are one customer
    assert report.unreadable_by_field == {"interactions": 1}  # 'lots' is no code and no number: filled, not dropped
    from fedcrm.data.ingest import apply_mapping, read_table
    from fedcrm.data.standardise import standardise

    typed = standardise(apply_mapping(read_table(cfg.customers), cfg.customers, cfg.name), cfg.customers).frame
    assert typed["customer_id"].tolist() == ["ab1", "ab1", "cd2", "ef3"]
    assert typed["interactions"].tolist()[:3] == [5.0, 1.0, 2.0]

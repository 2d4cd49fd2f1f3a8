"""Learned vocabularies: a category's levels from thresholded noised counts, released with
the statistics, charged once, bounded on both sides of the wire."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedcrm.config import PartnerConfig, TrainPlan
from fedcrm.contract.model import Contract
from fedcrm.data.layout import MAX_LEVELS, FeatureLayout
from fedcrm.errors import PolicyRefusal
from fedcrm.ml.vocabulary import VocabularyRelease, combine_vocabularies, node_threshold, noised_vocabulary
from fedcrm.node.egress import EgressViolation, check_reply, learned_features, list_lengths
from fedcrm.node.partner import PartnerNode
from fedcrm.privacy.ledger import Ledger
from fedcrm.protocol import METRICS, VOCABULARY
from fedcrm.sandbox.consortium import init_partner_folder

CONTRACT = '''
[contract]
name = "shop"
version = 1

[[fields]]
name = "customer_id"
kind = "id"
grade = "core-sensitive"
key = true

[[fields]]
name = "visits"
kind = "count"
grade = "non-sensitive"
reference = [3.0, 2.0]

[[fields]]
name = "section"
kind = "category"
grade = "non-sensitive"
vocabulary = "learned"
min_count = 20

[[fields]]
name = "channel"
kind = "category"
grade = "non-sensitive"
vocabulary = ["web", "store"]

[[fields]]
name = "bought"
kind = "bool"
grade = "non-sensitive"
role = "label"

[[tasks]]
name = "propensity"
label = {field = "bought"}
'''


def plan() -> TrainPlan:
    return TrainPlan(task="propensity", contract_digest=Contract.loads(CONTRACT).digest())


def layout() -> FeatureLayout:
    return FeatureLayout.from_contract(Contract.loads(CONTRACT))


def test_a_node_names_only_values_whose_noised_count_clears_its_threshold() -> None:
    counts = {"section": {"garden": 5000, "toys": 3000, "rare": 5}}
    exact = noised_vocabulary(counts, layout(), 0.0)  # a policy releasing exact statistics: min_count only
    assert exact.levels == {"section": ["garden", "toys"]} and exact.counts["section"] == [5000.0, 3000.0]
    tau = node_threshold(8.0, 1, 20)
    assert tau == pytest.approx(1 + 7 * 8.0)  # Z_SELECT noise deviations above one customer
    for _ in range(200):  # a value 5 customers hold is never named; frequent ones always are
        release = noised_vocabulary(counts, layout(), 8.0)
        assert set(release.levels["section"]) == {"garden", "toys"}
        assert all(c >= tau for c in release.counts["section"])
        assert release.counts["section"] != [5000.0, 3000.0]  # noised


def test_the_coordinator_keeps_values_the_federation_holds_often_enough() -> None:
    a = VocabularyRelease(levels={"section": ["garden", "toys"]}, counts={"section": [15.0, 100.0]})
    b = VocabularyRelease(levels={"section": ["garden", "books"]}, counts={"section": [12.0, 8.0]})
    assert combine_vocabularies([a, b], layout()) == {"section": ["garden", "toys"]}  # books: 8 < 20
    many = VocabularyRelease(levels={"section": [f"s{i}" for i in range(100)]}, counts={"section": [50.0 + i for i in range(100)]})
    kept = combine_vocabularies([many], layout())["section"]
    assert len(kept) == MAX_LEVELS and "s99" in kept and "s0" not in kept  # the most frequent
    resolved = layout().with_vocabularies({"section": kept})
    names = resolved.names()
    assert names.index("section=other") + 1 == names.index("section=unknown") and not resolved.unresolved()
    with pytest.raises(ValueError, match="learn their levels"):
        layout().names()


@pytest.fixture()
def shop(tmp_path: Path) -> PartnerConfig:
    rows = ["cid,visits,section,channel,bought"]
    sections = ["garden"] * 600 + ["toys"] * 400 + ["rare-one"] * 2
    for i, s in enumerate(sections):
        rows.append(f"C{i},{i % 7},{s},{'web' if i % 3 else 'store'},{'yes' if (i % 5 == 0) ^ (s == 'toys') else 'no'}")
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "export.csv").write_text("\n".join(rows) + "\n")
    (folder / "contract.toml").write_text(CONTRACT)
    init_partner_folder(folder,
        'name = "shop"\npartner_id = 1\nwork_dir = "work"\nsecret_file = "secret.key"\ncontract = "contract.toml"\n'
        '[customers]\npath = "export.csv"\ncolumns = {customer_id = "cid", visits = "visits", section = "section", '
        'channel = "channel", bought = "bought"}\n')
    return PartnerConfig.load(folder / "partner.toml")


def test_the_node_releases_its_frequent_values_with_the_statistics_charged_once(shop: PartnerConfig) -> None:
    node = PartnerNode(shop, plan())
    reply, vocabulary = node.statistics("run-1")
    assert vocabulary is not None and set(vocabulary.levels["section"]) == {"garden", "toys"}  # not 'rare-one'
    assert reply.stat_vocab == vocabulary.flat_counts() and len(reply.stat_onehot) == 3  # channel: web, store, unknown
    entry = Ledger.of(shop).entries()[-1]
    sigma = node.statistics_sigma()
    assert entry.release == "statistics" and entry.noise_multiplier == pytest.approx(sigma / 2 ** 0.5)
    # a second run is sent the same release at no cost: no fresh draw to average with
    again, vocab2 = PartnerNode(shop, plan()).statistics("run-2")
    assert vocab2 == vocabulary and again.stat_vocab == reply.stat_vocab and len(Ledger.of(shop).entries()) == 1
    # the node's own egress guard passes this reply, and refuses the same names for another feature
    content = RecordDict({METRICS: reply.record(), VOCABULARY: ConfigRecord(vocabulary.levels)})
    lengths, learned = list_lengths(node.layout), learned_features(node.layout)
    assert check_reply("query", content, None, lengths, learned)[VOCABULARY] == {"values": 2}
    forged = RecordDict({METRICS: reply.record(), VOCABULARY: ConfigRecord({"channel": ["garden", "toys"]})})
    with pytest.raises(EgressViolation, match="not a learned category"):
        check_reply("query", forged, None, lengths, learned)
    train_like = RecordDict({METRICS: MetricRecord({"partner-id": 1}), VOCABULARY: ConfigRecord(vocabulary.levels)})
    with pytest.raises(EgressViolation, match="may not carry ConfigRecord"):
        check_reply("evaluate", train_like, None, lengths, learned)


def test_levels_from_the_coordinator_are_checked_before_any_work(shop: PartnerConfig) -> None:
    node = PartnerNode(shop, plan())
    ok = node.run_layout('{"section": ["garden", "toys"]}')
    names = ok.names()
    start = names.index("section=garden")
    assert names[start:start + 4] == ["section=garden", "section=toys", "section=other", "section=unknown"]
    for bad, why in (
            (None, "no levels"), ('{"section": ["garden"], "visits": ["1"]}', "learned features"),
            ('{"section": [' + ",".join(f'"s{i}"' for i in range(MAX_LEVELS + 1)) + "]}", f"at most {MAX_LEVELS}"),
            ('{"section": ["' + "x" * 200 + '"]}', "characters"), ("not json", "feature levels")):
        with pytest.raises(PolicyRefusal, match=why):
            node.run_layout(bad)
    with pytest.raises(PolicyRefusal, match="sent none"):  # a train without levels: refused, nothing charged
        node.train(ArrayRecord().to_torch_state_dict(), 1, "run-1")
    assert Ledger.of(shop).entries() == []

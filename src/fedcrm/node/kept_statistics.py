"""A partner's noised column sums, kept so later runs reuse them instead of paying again.

The federation's statistics are one Gaussian release per partner (`fedcrm.ml.fedstats`).
Sending the very same noised sums to a later run is post-processing of a release already
charged: it costs no further ε. A fresh draw would cost the full release again, and two
independent draws of the same sums would let their noise average out. So the node keeps
its release per dataset (fingerprint) and serves it to every run that asks for no less
noise than it carries; a re-exported dataset, or a request for more noise, makes a new one.

A kept release is served only if the ledger shows the charge it was made under: it is
written before the charge is appended, so a charge that failed leaves a file the node
never sends.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel

from fedcrm.ml.fedstats import PartnerSums
from fedcrm.ml.vocabulary import VocabularyRelease
from fedcrm.data.layout import FeatureLayout
from fedcrm.privatefiles import private_dir, private_replace


class KeptRelease(BaseModel):
    fingerprint: str
    noise_multiplier: float
    run_id: str  # the run whose round 0 the release was charged to
    sums: PartnerSums
    vocabulary: VocabularyRelease | None = None  # the frequent values of learned categories, released with the sums
    layout: str = ""  # the columns the sums are over (`layout_key`): another contract's run needs a release of its own
    sketch: list[float] | None = None  # gbdt runs: the numeric columns' noised grid counts (`fedcrm.ml.sketch`)


def layout_key(layout: FeatureLayout) -> str:
    """What a kept release must match: the summed columns and the learned categories."""
    fixed = layout.fixed_part()
    return hashlib.sha256(json.dumps([fixed.names(), [b.name for b in layout.unresolved()]]).encode()).hexdigest()[:16]


class KeptStatistics:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _file(self, fingerprint: str) -> Path:
        return self.folder / f"{fingerprint[:32]}.json"

    def load(self, fingerprint: str, noise_multiplier: float, layout: str = "", sketch: bool = False
             ) -> KeptRelease | None:
        """The kept release of this dataset and layout if it carries at least `noise_multiplier`
        (and, for a run that needs one, a sketch)."""
        file = self._file(fingerprint)
        if not file.is_file():
            return None
        kept = KeptRelease.model_validate(json.loads(file.read_text()))
        if kept.fingerprint != fingerprint or kept.noise_multiplier < noise_multiplier or kept.layout != layout:
            return None
        if sketch and kept.sketch is None:
            return None
        return kept

    def save(self, release: KeptRelease) -> None:
        private_dir(self.folder)
        with private_replace(self._file(release.fingerprint), "w") as fh:  # a reader sees one release whole
            fh.write(release.model_dump_json())

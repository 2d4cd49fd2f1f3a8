"""A partner's privacy account: its ledger read under its own policy, and every charge.

The node asks the account three things: how much noise a run needs (planned against
everything spent before it), whether a release may happen (not charged before, within the
partner's cap), and to record it. `charge` does the last two under the ledger's lock with
the release in between, so the cap checked is the cap that holds when the entry is
written, whoever else writes to the same ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import BaseModel

from fedcrm.config import PrivacyPolicy
from fedcrm.config.partner import ReleaseKind
from fedcrm.errors import AlreadyCharged, PrivacyBudgetError
from fedcrm.privacy.accounting import (SIGMA_MAX, HistoryEntry, RunNoise, RunPlan, calibrate_noise, compact, epsilon,
                                       plan_run, run_noise)
from fedcrm.privacy.ledger import Ledger, LedgerEntry
from fedcrm.privacy.parallel import EVERYONE, Region, Scope, Spend, heaviest_touched, partner_epsilon, region_epsilons
from fedcrm.protocol import LedgerHead


class BudgetExceeded(PrivacyBudgetError):
    """The next release would take the partner past the ε cap it set for itself."""


class RunShape(BaseModel):
    """What a run asks of one partner, as far as privacy is concerned."""

    rows: int
    batch_size: int
    local_epochs: int
    rounds: int
    target_run_epsilon: float
    max_grad_norm: float
    statistics_noise: float = 0.0  # σ of the statistics release the run starts with (0: none)
    evaluations: int = 0  # hold-out evaluations the run plans (round 0 and every round)
    evaluation_floor: float = -1.0  # the partner's least evaluation noise (< 0: evaluations exact, uncharged)
    baseline_steps: int = 0  # steps of a local-only baseline at the run's noise and sample rate (0: none)
    training: Scope = EVERYONE  # whose rows training and statistics read
    holdout: Scope = EVERYONE  # whose rows evaluations read


class Release(BaseModel):
    """One application of a Gaussian mechanism to the partner's data: what it is, and
    whose rows it reads (`scope`: one side of the hold-out split, or everyone)."""

    run_id: str
    server_round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    kind: ReleaseKind = "train"
    scope: Scope = EVERYONE

    @property
    def history_entry(self) -> HistoryEntry:
        return (self.noise_multiplier, self.sample_rate, self.steps)

    @property
    def spend(self) -> Spend:
        return (self.history_entry, self.scope)


class Charge(BaseModel):
    """A release being charged: the history before it, ε before it (by the partner's
    accountant) and ε after it by PRV and by RDP."""

    history: list[HistoryEntry]
    before: float
    after_prv: float
    after_rdp: float
    accountant: str

    @property
    def after(self) -> float:
        return self.after_prv if self.accountant == "prv" else self.after_rdp


class PrivacyAccount:
    def __init__(self, ledger: Ledger, policy: PrivacyPolicy, partner: str, dataset_fingerprint: str) -> None:
        """`dataset_fingerprint`: the export the releases are computed on; with the policy's
        `compose_over = "dataset"` only releases on the same export compose."""
        self.ledger, self.policy, self.partner, self.fingerprint = ledger, policy, partner, dataset_fingerprint

    # ------------------------------------------------------------ reading
    def _counted(self, entries: list[LedgerEntry]) -> list[LedgerEntry]:
        if self.policy.compose_over == "dataset":
            return [e for e in entries if e.dataset_fingerprint == self.fingerprint]
        return entries

    def entries(self) -> list[LedgerEntry]:
        """The verified entries that compose into this partner's ε (raises if tampered)."""
        return self._counted(self.ledger.entries())

    def charged(self, run_id: str, server_round: int, entries: list[LedgerEntry] | None = None,
                kind: ReleaseKind | None = None) -> bool:
        """Was this release (run, round and kind; `kind` None: training, or the statistics
        for round 0) charged before?"""
        entries = self.entries() if entries is None else entries
        kind = kind or ("statistics" if server_round == 0 else "train")
        return any(e.run_id == run_id and e.server_round == server_round and e.kind == kind for e in entries)

    def epsilon(self, history: list[HistoryEntry], kind: str | None = None) -> float:
        """ε of one history composed as a whole (every release reading the same rows)."""
        return epsilon(history, self.policy.delta, kind or self.policy.accountant)

    def spent(self, spends: list[Spend], kind: str | None = None) -> float:
        """The partner's ε after `spends`: the largest over the sides of its hold-out split
        (`fedcrm.privacy.parallel`)."""
        return partner_epsilon(spends, self.policy.delta, kind or self.policy.accountant)  # type: ignore[arg-type]

    def by_region(self, entries: list[LedgerEntry] | None = None) -> list[tuple[Region, float]]:
        """ε on each region of the partner's customers (hold-out and training side)."""
        entries = self.entries() if entries is None else entries
        return region_epsilons([(e.history_entry, e.scope) for e in entries], self.policy.delta,
                               self.policy.accountant)

    def head(self, receipt: int | None = None) -> LedgerHead:
        """The ledger as this node verifies it, for the coordinator's records. `receipt`:
        the entry count of the coordinator's last receipt of this ledger (from the round
        config); the head then carries the hash of that entry, which the coordinator
        compares with its receipt: a ledger cut back and grown again past the receipt
        does not match."""
        status = self.ledger.verify()
        head = LedgerHead(ledger_entries=status.entries, ledger_ok=int(status.ok), ledger_head=status.head_short)
        if receipt is not None and receipt > 0:
            proof = self.ledger.hash_at(receipt)
            head.ledger_receipt = receipt
            head.ledger_receipt_hash = None if proof is None else int(proof[:13], 16)
        return head

    # ------------------------------------------------------------ planning
    def _run_inputs(self, run_id: str | None, shape: RunShape, entries: list[LedgerEntry] | None,
                    planning: bool = False) -> dict:
        """Prior history and run shape. Within a run σ is fixed by its first charged training
        round, so a node restarted mid-run keeps training with the noise the run started with;
        the run's statistics (round 0) are paid from the run's own ε (`planning`: a plan made
        before the run counts the statistics release the run will start with)."""
        entries = self.entries() if entries is None else entries
        this_run = [e for e in entries if e.run_id == run_id]
        trained = [e for e in this_run if e.kind == "train"]
        # the customers training reads that have spent most: other runs' releases on them
        # are the prior, this run's (its statistics) are paid from the run's own ε
        spends = [(e.history_entry, e.scope) for e in entries if not (e.run_id == run_id and e.kind == "train")]
        others = [e for e in entries if not (e.run_id == run_id and e.kind == "train")]
        region = [others[i] for i in heaviest_touched(spends, shape.training, self.policy.delta, self.policy.accountant)]
        released = [e.history_entry for e in region if e.run_id == run_id]
        if planning and not this_run and shape.statistics_noise > 0:  # a plan made before the run
            released = [(shape.statistics_noise, 1.0, 1)]
        return dict(prior=[e.history_entry for e in region if e.run_id != run_id], rows=shape.rows,
                    batch_size=shape.batch_size, local_epochs=shape.local_epochs, rounds=shape.rounds,
                    target_run_epsilon=shape.target_run_epsilon, delta=self.policy.delta,
                    accountant=self.policy.accountant, sigma=trained[0].noise_multiplier if trained else None,
                    run_releases=released)

    def noise(self, run_id: str, shape: RunShape, entries: list[LedgerEntry] | None = None) -> RunNoise:
        """The mechanism of this run: what the node needs before a round. `spent_before`:
        the partner's ε before the run, over every side of its split."""
        entries = self.entries() if entries is None else entries
        noise = run_noise(**self._run_inputs(run_id, shape, entries))
        before = self.spent([(e.history_entry, e.scope) for e in entries if e.run_id != run_id])
        return noise.model_copy(update={"spent_before": before})

    def evaluation_noise(self, run_id: str, shape: RunShape, floor: float,
                         entries: list[LedgerEntry] | None = None) -> float:
        """σ of this run's evaluations (counts of hold-out rows, sensitivity 1): fixed by
        the run's first charged evaluation; else the least noise, never under `floor`, with
        which the run's planned evaluations (`shape.evaluations`) add at most the run's
        target ε to the customers they read."""
        entries = self.entries() if entries is None else entries
        done = [e for e in entries if e.run_id == run_id and e.kind == "evaluate"]
        if done:
            return done[0].noise_multiplier
        if shape.evaluations <= 0:
            return floor
        spends = [(e.history_entry, e.scope) for e in entries]
        delta, kind = self.policy.delta, self.policy.accountant
        prior = compact([entries[i].history_entry for i in heaviest_touched(spends, shape.holdout, delta, kind)])
        try:
            sigma = calibrate_noise(prior, 1.0, shape.evaluations, epsilon(prior, delta, kind) + shape.target_run_epsilon,
                                    delta, kind)
        except PrivacyBudgetError:
            sigma = SIGMA_MAX
        return max(sigma, floor)

    def plan(self, shape: RunShape, run_id: str | None = None) -> RunPlan:
        """What a run costs: σ calibrated against everything spent before it, ε per round
        on the training side, and ε after the run's evaluations on the hold-out side."""
        entries = self.entries()
        inputs = self._run_inputs(run_id, shape, entries, planning=True)
        plan = plan_run(partner=self.partner, epsilon_cap=self.policy.epsilon_cap, max_grad_norm=shape.max_grad_norm,
                        **inputs)
        spends = [(e.history_entry, e.scope) for e in entries]
        update: dict = {"spent_before": self.spent([(e.history_entry, e.scope) for e in entries if e.run_id != run_id])}
        if shape.baseline_steps > 0:  # after the last round, on the same customers, with the run's σ and q
            history = [*inputs["prior"], *(inputs["run_releases"] or []),
                       (plan.noise_multiplier, plan.sample_rate, plan.steps_per_round * plan.rounds),
                       (plan.noise_multiplier, plan.sample_rate, shape.baseline_steps)]
            update |= {"baseline_steps": shape.baseline_steps,
                       "epsilon_after_baseline": epsilon(history, self.policy.delta, self.policy.accountant)}
        if shape.evaluations > 0 and shape.evaluation_floor >= 0:
            sigma = self.evaluation_noise(str(run_id), shape, shape.evaluation_floor, entries)
            if sigma > 0:
                delta, kind = self.policy.delta, self.policy.accountant
                done = sum(1 for e in entries if e.run_id == run_id and e.kind == "evaluate")
                region = [spends[i][0] for i in heaviest_touched(spends, shape.holdout, delta, kind)]

                def holdout(evaluations: int, accountant: str = kind) -> float:
                    return epsilon([*region, (sigma, 1.0, max(evaluations - done, 0))], delta, accountant)  # type: ignore[arg-type]

                # round r ends with its evaluation, the (r + 1)-th of the run (round 0 evaluates first)
                projections = [p.model_copy(update={"epsilon": e, "epsilon_rdp": max(p.epsilon_rdp, holdout(p.round + 1, "rdp")),
                                                    "within_cap": e <= self.policy.epsilon_cap})
                               for p in plan.projections for e in [max(p.epsilon, holdout(p.round + 1))]]
                update |= {"evaluations": shape.evaluations, "evaluation_noise": sigma,
                           "epsilon_holdout_after": holdout(shape.evaluations), "projections": projections}
        return plan.model_copy(update=update)

    def anticipate(self, release: Release, entries: list[LedgerEntry] | None = None) -> None:
        """Compute now the ε that charging `release` next will ask for (the partner's ε
        after it, by PRV and by RDP), so that it is in the node's memo
        (`fedcrm.privacy.memo`) before the message that charges it. A deployed node serves
        every message in a fresh process, and an evaluation's only use of Opacus is this
        accounting: computed by the training message before it, which has Opacus loaded for
        DP-SGD anyway, the evaluation's process never imports it (2-3 s of a deployed
        round's evaluation, `benchmarks/overhead.py`). Nothing is checked or recorded here;
        the charge still checks the cap with these very values."""
        entries = self.entries() if entries is None else entries
        spends = [*((e.history_entry, e.scope) for e in entries), release.spend]
        for kind in ("prv", "rdp"):
            self.spent(spends, kind)

    # ------------------------------------------------------------ charging
    @contextmanager
    def charge(self, release: Release) -> Iterator[Charge]:
        """Check the release, let the caller compute it, then record it: all under the
        ledger's lock. Refuses a round charged before and one that would pass the cap; if
        the block raises, nothing is recorded."""
        with self.ledger.exclusive() as all_entries:
            entries = self._counted(all_entries)
            if self.charged(release.run_id, release.server_round, entries, release.kind):
                raise AlreadyCharged(f"partner {self.partner}: run {release.run_id} round {release.server_round} "
                                     f"({release.kind}) was already charged; refusing to release it twice")
            history = [e.history_entry for e in entries]
            spends = [(e.history_entry, e.scope) for e in entries]
            cost = Charge(history=history, before=self.spent(spends), accountant=self.policy.accountant,
                          after_prv=self.spent([*spends, release.spend], "prv"),
                          after_rdp=self.spent([*spends, release.spend], "rdp"))
            cap, delta, kind = self.policy.epsilon_cap, self.policy.delta, self.policy.accountant
            if cost.after > cap:
                raise BudgetExceeded(
                    f"partner {self.partner}: {release.kind} of round {release.server_round} of run {release.run_id} "
                    "would raise ε "
                    f"from {cost.before:.3f} to {cost.after:.3f} (δ={delta:g}, {kind.upper()}), above the cap of "
                    f"{cap:g} this partner set; remaining budget {max(cap - cost.before, 0):.3f}. "
                    "The node refuses the release.")
            yield cost
            self.ledger.append(
                partner=self.partner, run_id=release.run_id, server_round=release.server_round,
                dataset_fingerprint=self.fingerprint, noise_multiplier=release.noise_multiplier,
                sample_rate=release.sample_rate, steps=release.steps, delta=delta,
                max_grad_norm=release.max_grad_norm, accountant=kind, epsilon_after=cost.after,
                epsilon_rdp_after=cost.after_rdp, epsilon_cap=cap, release=release.kind, split=release.scope.split,
                holdout_fraction=release.scope.holdout_fraction, side=release.scope.side)

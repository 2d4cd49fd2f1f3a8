"""The coordinator's list of members (and, in a simulation, where each finds its config)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError

from fedcrm.config.loading import Strict, load_cached, pretty, read_toml
from fedcrm.errors import ConfigError


class FederationMember(Strict):
    partner_id: int
    name: str
    config: Path | None = Field(None, description="partner config; only used by simulations on one machine")


class FederationConfig(Strict):
    """The coordinator's list of members. In a simulation it also says where each
    simulated node finds its own partner config (partition i → member i)."""

    name: str
    superlink: str | None = Field(None, description="host:port partners dial (deployment)")
    contract: Path | None = Field(None, description="the consortium's data contract (relative to this file); its "
                                  "digest travels with every run and each node compares it with its own copy")
    members: list[FederationMember] = Field(default_factory=list)
    source: Path | None = Field(None, exclude=True)

    @classmethod
    def load(cls, path: str | Path) -> FederationConfig:
        return load_cached(cls, Path(path).resolve())

    @classmethod
    def _load(cls, path: Path) -> FederationConfig:
        try:
            cfg = cls.model_validate(read_toml(path))
        except ValidationError as exc:
            raise ConfigError(f"federation config {path}: {pretty(exc)}") from None
        members = [
            m.model_copy(update={"config": (path.parent / m.config).resolve()}) if m.config else m
            for m in cfg.members
        ]
        ids = [m.partner_id for m in members]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"federation config {path}: duplicate partner_id in {ids}")
        contract = (path.parent / cfg.contract).resolve() if cfg.contract else None
        return cfg.model_copy(update={"members": members, "source": path, "contract": contract})

    def contract_digest(self) -> str:
        """The digest of the consortium's contract ('' when the federation names none)."""
        if self.contract is None:
            return ""
        from fedcrm.contract.model import Contract

        return Contract.load(self.contract).digest()

    def names(self) -> dict[int, str]:
        return {m.partner_id: m.name for m in self.members}

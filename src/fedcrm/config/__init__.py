"""Configuration: a partner's mapping and policy, a federation's members, one run's plan."""

from fedcrm.config.federation import FederationConfig, FederationMember
from fedcrm.config.partner import (MONEY_FACTORS, CleaningRules, Generalisation, InteractionMapping, PartnerConfig,
                                   PrivacyPolicy, TableMapping, TableSpec, TransactionMapping)
from fedcrm.config.plan import TrainPlan

__all__ = ["MONEY_FACTORS", "CleaningRules", "FederationConfig", "FederationMember", "Generalisation",
           "InteractionMapping", "PartnerConfig", "PrivacyPolicy", "TableMapping", "TableSpec", "TrainPlan",
           "TransactionMapping"]

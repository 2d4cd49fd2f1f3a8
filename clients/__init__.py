"""Flower ClientApp for partner nodes: a thin adapter over `fedcrm.node.partner`."""

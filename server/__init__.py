"""Flower ServerApp for the coordinator: a thin adapter over `fedcrm.coordinator.loop`."""

"""Rewards computed from log-probabilities: density ratio and friends."""

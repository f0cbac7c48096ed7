"""Evaluating scorers as reward models (RewardBench-style)."""

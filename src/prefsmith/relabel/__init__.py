"""Reward-augmented relabeling: goal-conditioned preference pairs (``docs/methods.md``)."""

"""Reward-augmented relabeling: goal-conditioned preference pairs (METHODS.md section 2)."""

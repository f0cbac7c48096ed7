"""Preference tuning (DPO, SimPO) of a policy with TRL, full or LoRA."""

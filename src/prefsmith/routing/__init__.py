"""Customized density ratio: domains, routers and per-domain conditioning contexts."""

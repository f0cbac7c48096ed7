"""prefsmith: preference data for LLM alignment from off-the-shelf open models."""

__version__ = "0.1.0"

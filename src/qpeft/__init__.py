"""qpeft: parameter-efficient fine-tuning of causal LMs, classical and quantum, compared honestly."""

__version__ = "0.1.0"

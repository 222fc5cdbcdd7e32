"""Evaluating a model: generation, test loss and scores (``generate``), the text metrics (``metrics``)
and generation latency (``latency``). Nothing here knows which method trained the model."""

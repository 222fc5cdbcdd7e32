"""The Trainer's checkpoints of a run: which one to resume from, and at which step it was saved."""

from __future__ import annotations

import json
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint that was written to the end, or None.

    The Trainer writes ``trainer_state.json`` last and deletes older checkpoints only after
    that, so a run killed while saving still has its previous checkpoint to resume from.
    """
    complete = []
    for folder in checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        try:
            complete.append((checkpoint_step(folder), folder))
        except (OSError, ValueError, KeyError):
            continue
    return str(max(complete)[1]) if complete else None


def checkpoint_step(checkpoint: str | Path) -> int:
    """The optimizer step a checkpoint was saved at (from its trainer state, written last)."""
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]

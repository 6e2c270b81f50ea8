"""The in-domain DINO pretraining checkpoint: its format tag and how it is read.

``medvit.pretrain.pretrain_dino`` writes it; ``create_model(name, "<start>+dino_indomain", weights_file=...)``
reads its kept teacher backbone (``medvit.models.backbones.load_backbone_state``). Both read it here, so the
models need nothing of the pretraining (``pretrain`` imports ``models``, never the other way).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT_FORMAT = "medvit.pretrain_dino/2"  # /2: the kept teacher (keep) and its epoch


class PretrainCheckpointError(ValueError):
    """A pretraining checkpoint that cannot be resumed here: made with other settings, or not one at all."""


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A pretraining checkpoint as written by ``medvit.pretrain.pretrain_dino``; anything else is a clear error."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PretrainCheckpointError(f"cannot read pretraining checkpoint {path}: {type(err).__name__}: {err}") \
            from None
    found = state.get("settings", {}).get("format") if isinstance(state, dict) else None
    if isinstance(found, str) and found.startswith("medvit.pretrain_dino/") and found != CHECKPOINT_FORMAT:
        raise PretrainCheckpointError(f"{path} was written by another version of medvit (format {found!r}; this "
                                      f"one reads {CHECKPOINT_FORMAT!r}): delete it and pretrain again")
    if found != CHECKPOINT_FORMAT:
        raise PretrainCheckpointError(f"{path} is not a medvit DINO pretraining checkpoint "
                                      f"(no settings.format == {CHECKPOINT_FORMAT!r})")
    return state

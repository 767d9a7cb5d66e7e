"""The Segment Anything prompt encoder, configured for a 64x64 embedding of a 1024 frame.

Prompts are given in pixels of the model's input frame (x = column, y = row, after the
longest-side resize); the encoder normalises them by ``input_image_size`` internally, so a
frame of 256 (LiteMedSAM) and one of 1024 (ours) share the same learned weights.
"""

from __future__ import annotations

from torch import nn

from hrmedsegsam.model._sam import sam_modeling


def build_prompt_encoder(
    image_size: int = 1024, embedding_hw: tuple[int, int] = (64, 64), embed_dim: int = 256
) -> nn.Module:
    """Return a ``segment_anything`` ``PromptEncoder`` for an ``image_size`` square frame."""
    return sam_modeling().PromptEncoder(
        embed_dim=embed_dim,
        image_embedding_size=embedding_hw,
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )

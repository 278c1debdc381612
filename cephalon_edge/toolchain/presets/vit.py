"""timm's Vision Transformers (``vit_*_patch16_224``): a 16x16 patch embedding, a class
token and learned positions, pre-norm transformer blocks, a final LayerNorm read at the class
token, a linear classifier. Exits go after any block but the last."""

from __future__ import annotations

from typing import Any

from cephalon_edge.toolchain.presets import Preset, Unit, classifier, image_modality
from cephalon_edge.toolchain.spec import StageSpec

PATCH = 16


def _tokens_last(t: Any) -> Any:
    """timm keeps tokens as (1, tokens, channels); ours are (1, channels, tokens)."""
    return t.transpose(1, 2).contiguous()


def vit(size: str, width: int, depth: int, heads: int) -> Preset:
    def base(shape: tuple[int, ...], classes: int) -> dict[str, Any]:
        embed = {"kind": "patch_embed", "channels": width, "patch": PATCH, "positions": True, "project": False}
        return {"modalities": [image_modality(shape, embed)], "tasks": classifier(classes), "backbone": "tokens",
                "class_token": True, "head_pool": "cls"}

    units = tuple(Unit(StageSpec(channels=width, block="transformer", heads=heads, expansion=4), f"blocks.{i}")
                  for i in range(depth))
    return Preset(f"timm:vit_{size}_patch16_224", f"ViT-{size.capitalize()}/16, {depth} blocks, {heads} heads",
                  "block", units, {n: n - 1 for n in range(1, depth)}, base,
                  (("patch_embed.proj.", "adapters.{modality}.body.0."), ("cls_token", "adapters.{modality}.class_token"),
                   ("pos_embed", "adapters.{modality}.positions"), ("norm.", "heads.task_{task}.norm."),
                   ("head.", "heads.task_{task}.fc.")),
                  {"cls_token": _tokens_last, "pos_embed": _tokens_last})


PRESETS = (vit("tiny", 192, 12, 3), vit("small", 384, 12, 6))

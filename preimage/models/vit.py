"""Vision Transformers (timm ``vit_*``, ``deit_*``): token layout, token layers as grids, attention
maps and attention rollout.

A ViT (Dosovitskiy et al. 2021) cuts the image into ``p x p`` patches, embeds each as a token and
puts a few *prefix* tokens in front: the class token (``cls``), DeiT's distillation token
(``dist``, Touvron et al. 2021) and register tokens (``reg``, Darcet et al. 2024). Every block maps
the sequence ``B x T x C`` (``T = prefix + h·w``) to another. preimage shows such a layer as the
patch tokens on their grid, ``B x C x h x w``, like a CNN feature map, and keeps the prefix tokens
apart, readable by name::

    blocks.5            patch tokens as a grid, B x C x h x w
    blocks.5.mlp.act    MLP hidden units after the GELU, B x 4C x h x w (Ghiasi et al. 2022)
    blocks.5.cls        the class token, B x C
    blocks.5.dist       the distillation token (DeiT distilled models), B x C
    blocks.5.reg        the register tokens, B x R x C
    blocks.5.tokens     the whole sequence as the module returns it, B x T x C

Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): with the
attention of layer l averaged over heads, ``A_l``, and the residual connection accounted for by
``Â_l = 0.5 A_l + 0.5 I`` (rows renormalized), the rollout is ``R = Â_L Â_{L-1} ... Â_1``; the row of
the class token over the patch tokens, on the patch grid, says how much each patch flowed into the
class token. It does not depend on the class.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VIEWS", "TokenLayout", "is_vit", "is_vit_arch", "token_layout", "grid_size", "split_view",
    "token_view", "adapt_state_dict", "attention_maps", "attention_rollout", "rollout_map",
]

#: names that read the prefix tokens (or the raw sequence) of a token layer: ``blocks.5.cls``
VIEWS = ("cls", "dist", "reg", "tokens")


@dataclass(frozen=True)
class TokenLayout:
    """Which token is which in a ViT's sequence: ``names`` of the prefix tokens, in order, then the
    patches, row by row."""

    names: tuple[str, ...]  # "cls", "dist", "reg" per prefix token
    patch_size: tuple[int, int]

    @property
    def prefix(self) -> int:
        return len(self.names)

    def index(self, view: str) -> list[int]:
        """Positions of the prefix tokens of one kind (``cls``, ``dist``, ``reg``)."""
        return [i for i, n in enumerate(self.names) if n == view]


def is_vit_arch(arch: str) -> bool:
    """A timm architecture name of the plain ViT family (``vit_*``, ``deit_*``, ``deit3_*``)."""
    return arch.split(".")[0].startswith(("vit_", "deit"))


def is_vit(net: nn.Module) -> bool:
    """A timm VisionTransformer (or a subclass such as DeiT's distilled one)."""
    return all(hasattr(net, a) for a in ("patch_embed", "blocks", "num_prefix_tokens")) and hasattr(
        net.patch_embed, "patch_size")


def token_layout(net: nn.Module) -> TokenLayout | None:
    """The prefix tokens and patch size of a ViT; None for other networks."""
    if not is_vit(net):
        return None
    names: list[str] = []
    if getattr(net, "cls_token", None) is not None:
        names.append("cls")
    if getattr(net, "dist_token", None) is not None:
        names.append("dist")
    names += ["reg"] * int(getattr(net, "num_reg_tokens", 0) or 0)
    if len(names) != int(net.num_prefix_tokens):  # a variant this module does not know: name them by kind only
        names = ["cls"] + ["reg"] * (int(net.num_prefix_tokens) - 1) if net.num_prefix_tokens else []
    p = net.patch_embed.patch_size
    return TokenLayout(tuple(names), (int(p[0]), int(p[1])) if isinstance(p, (tuple, list)) else (int(p), int(p)))


def grid_size(net: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The patch grid ``(h, w)`` for an input of ``height x width`` pixels."""
    pe = net.patch_embed
    if hasattr(pe, "dynamic_feat_size"):
        gh, gw = pe.dynamic_feat_size((height, width))
        return int(gh), int(gw)
    p = token_layout(net).patch_size  # type: ignore[union-attr]
    return height // p[0], width // p[1]


def split_view(name: str) -> tuple[str, str | None]:
    """``"blocks.5.cls"`` -> ``("blocks.5", "cls")``; a name without a view -> ``(name, None)``."""
    base, _, last = name.rpartition(".")
    if base and last in VIEWS:
        return base, last
    return name, None


def token_view(out: torch.Tensor, view: str, layout: TokenLayout, grid: tuple[int, int],
               has_prefix: bool = True) -> torch.Tensor:
    """One view of a token layer's output ``B x T x C``: ``"grid"`` (patches, ``B x C x h x w``; ``"nhwc"``
    for a ``B x h x w x C`` patch embedding),
    ``"cls"``/``"dist"`` (``B x C``), ``"reg"`` (``B x R x C``) or ``"tokens"`` (unchanged).
    ``has_prefix``: whether the sequence starts with the prefix tokens (the patch embedding's output
    does not)."""
    if view == "tokens":
        return out
    if view == "nhwc":  # a patch embedding that keeps its grid: B x h x w x C
        return out.permute(0, 3, 1, 2)
    prefix = layout.prefix if has_prefix else 0
    if view == "grid":
        b, _, c = out.shape
        return out[:, prefix:].transpose(1, 2).reshape(b, c, grid[0], grid[1])
    idx = layout.index(view) if has_prefix else []
    if not idx:
        raise ValueError(f"no {view} token in this layer")
    return out[:, idx[0]] if view in ("cls", "dist") else out[:, idx[0]:idx[-1] + 1]


def adapt_state_dict(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict for ``net``: a ViT's position embedding resampled (bicubic, as timm does) when it
    was saved for another grid size; anything else unchanged."""
    own = getattr(net, "pos_embed", None)
    theirs = state.get("pos_embed")
    if not is_vit(net) or own is None or theirs is None or theirs.shape == own.shape or theirs.dim() != 3:
        return state
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(net, "no_embed_class", False) else int(net.num_prefix_tokens)
    old = theirs.shape[1] - prefix
    side = int(round(old ** 0.5))
    if side * side != old:
        return state  # not a square grid: let the shape check name the mismatch
    out = dict(state)
    out["pos_embed"] = resample_abs_pos_embed(theirs.float(), new_size=list(net.patch_embed.grid_size),
                                              old_size=[side, side], num_prefix_tokens=prefix).to(theirs.dtype)
    return out


def _attention_modules(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules()
            if all(hasattr(m, a) for a in ("qkv", "attn_drop", "num_heads", "fused_attn"))]


def attention_maps(model, pixels: torch.Tensor) -> list[torch.Tensor]:
    """The attention probabilities of every block, ``B x heads x T x T`` each, in block order, for a
    batch of [0, 1] images (``model``: a :class:`~preimage.models.Model` around a timm ViT).

    timm computes attention with a fused kernel that never exposes the probabilities; for this one
    forward pass the modules take timm's explicit path (softmax, then ``attn_drop``, an identity in
    eval mode), whose output is read."""
    attns = _attention_modules(model.net)
    if not attns:
        raise ValueError(f"{model.name} has no attention modules")
    captured: list[torch.Tensor] = []
    saved = [m.fused_attn for m in attns]
    handles = [m.attn_drop.register_forward_hook(lambda _m, _i, out: captured.append(out)) for m in attns]
    try:
        for m in attns:
            m.fused_attn = False
        model.net(model.net_input(model.normalize(pixels)))
    finally:
        for h in handles:
            h.remove()
        for m, f in zip(attns, saved):
            m.fused_attn = f
    return captured


def attention_rollout(attentions: list[torch.Tensor], *, residual: float = 0.5, head_fusion: str = "mean"
                      ) -> torch.Tensor:
    """``R = Â_L ... Â_1`` with ``Â_l = (1 - residual) A_l + residual I``, rows renormalized, and
    ``A_l`` the heads of layer l fused by their ``mean`` (Abnar & Zuidema 2020), ``max`` or ``min``.
    Input: per-layer ``B x heads x T x T``; output ``B x T x T``."""
    if not attentions:
        raise ValueError("no attention maps")
    if head_fusion not in ("mean", "max", "min"):
        raise ValueError(f"unknown head fusion {head_fusion!r} (mean, max, min)")
    rollout = None
    for a in attentions:
        a = a.float()
        fused = a.mean(1) if head_fusion == "mean" else (a.amax(1) if head_fusion == "max" else a.amin(1))
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        hat = (1 - residual) * fused + residual * eye
        hat = hat / hat.sum(-1, keepdim=True)
        rollout = hat if rollout is None else hat @ rollout
    return rollout  # type: ignore[return-value]


@torch.no_grad()
def rollout_map(model, pixels: torch.Tensor, *, residual: float = 0.5, head_fusion: str = "mean",
                upsample: bool = True) -> torch.Tensor:
    """Attention rollout of the class token over the patches, ``B x h x w`` (or ``B x H x W`` upsampled
    bilinearly to the image when ``upsample``). A model without a class token uses the mean of the
    rows of all tokens."""
    layout = token_layout(model.net)
    if layout is None:
        raise ValueError(f"{model.name} is not a Vision Transformer")
    rollout = attention_rollout(attention_maps(model, pixels), residual=residual, head_fusion=head_fusion)
    cls = layout.index("cls")
    row = rollout[:, cls[0]] if cls else rollout.mean(1)
    gh, gw = grid_size(model.net, *pixels.shape[-2:])
    grid = row[:, layout.prefix:].reshape(-1, gh, gw)
    if not upsample:
        return grid
    return F.interpolate(grid[:, None], size=tuple(pixels.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]

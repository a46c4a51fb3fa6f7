"""The frozen CLIP image tower and the one forward pass every PEFT method plugs into.

We keep open_clip's modules (and so its weights and key names) but run the block
loop ourselves: attention goes through ``F.scaled_dot_product_attention`` (fused
flash / memory-efficient kernels on CUDA). PEFT modules (docs/method.md §1) plug into
hook points: before each block (prompt-style methods, VPT, edit the token sequence)
and inside it (in-projection, out-projection, MLP layers, MLP branch: LoRA, SSF,
Adapter, AdaptFormer); see :class:`PeftModule`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from finessl.errors import UserError
from finessl.models.clip import OPENAI_MEAN, OPENAI_STD
from finessl.models.methods import Strategy
from finessl.models.tower import ImageTower


@dataclass(frozen=True)
class BlockHooks:
    """The PEFT modules acting inside block ``index``, per in-block hook point
    (see :class:`PeftModule`); built once by :class:`ViTBackbone`."""

    index: int
    qkv: tuple = ()
    attn_out: tuple = ()
    fc1: tuple = ()
    fc2: tuple = ()
    mlp: tuple = ()


def attention(attn: nn.Module, x: torch.Tensor, n_out: int,
              hooks: BlockHooks | None = None) -> torch.Tensor:
    """Multi-head self-attention with nn.MultiheadAttention's weights, through SDPA.

    Only the first ``n_out`` tokens are queried: the others still serve as keys and
    values, but their outputs are never computed (see :meth:`ViTBackbone.forward`).
    ``qkv`` hooks see q (first ``n_out`` tokens), k and v as (B, tokens, width)
    views; ``attn_out`` hooks the out-projection's output.
    """
    b, n, d = x.shape
    heads, hd = attn.num_heads, d // attn.num_heads
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    if n_out == n:
        q, k, v = F.linear(x, w, bias).chunk(3, dim=-1)
    else:
        q = F.linear(x[:, :n_out], w[:d], None if bias is None else bias[:d])
        k, v = F.linear(x, w[d:], None if bias is None else bias[d:]).chunk(2, dim=-1)
    if hooks is not None:
        for module in hooks.qkv:
            q, k, v = module.qkv(hooks.index, x, q, k, v)
    q, k, v = (t.unflatten(-1, (heads, hd)).transpose(1, 2) for t in (q, k, v))
    out = attn.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(
        b, n_out, d))
    if hooks is not None:
        for module in hooks.attn_out:
            out = module.attn_out(hooks.index, out)
    return out


def mlp_forward(mlp: nn.Sequential, x: torch.Tensor, hooks: BlockHooks) -> torch.Tensor:
    """open_clip's MLP layer by layer, with the ``fc1`` hooks after ``c_fc`` and the
    ``fc2`` hooks after ``c_proj``."""
    if not (hooks.fc1 or hooks.fc2):
        return mlp(x)
    for name, layer in mlp.named_children():
        x = layer(x)
        if name == "c_fc":
            for module in hooks.fc1:
                x = module.fc1(hooks.index, x)
        elif name == "c_proj":
            for module in hooks.fc2:
                x = module.fc2(hooks.index, x)
    return x


def block_forward(block: nn.Module, x: torch.Tensor, n_out: int | None = None,
                  hooks: BlockHooks | None = None) -> torch.Tensor:
    """open_clip's ResidualAttentionBlock (pre-norm) with SDPA attention, computing the
    outputs of the first ``n_out`` tokens only (all of them by default), with the
    in-block PEFT ``hooks`` (none: exactly open_clip's block)."""
    n_out = x.shape[1] if n_out is None else n_out
    x = x[:, :n_out] + block.ls_1(attention(block.attn, block.ln_1(x), n_out, hooks))
    if hooks is None:
        return x + block.ls_2(block.mlp(block.ln_2(x)))
    h = mlp_forward(block.mlp, block.ln_2(x), hooks)
    for module in hooks.mlp:
        h = module.mlp(hooks.index, x, h)
    return x + block.ls_2(h)


IN_BLOCK_HOOKS = ("qkv", "attn_out", "fc1", "fc2", "mlp")


class PeftModule(Strategy, nn.Module):
    """Base of a PEFT module: override the hook points it needs (docs/method.md §1).
    Registered with :func:`~finessl.models.methods.peft_method`, it is built by its
    ``from_config(cfg, visual, first_block)`` into the ViT's hooks.

    Token hooks, called by :meth:`ViTBackbone.forward` before every block:

    - ``before_block(i, x, n_keep) -> x`` sees the token sequence (B, L, width)
      entering block ``i``; the first ``n_keep`` tokens are the class and patch tokens.
    - ``drops_extra_tokens(i)`` says whether tokens beyond ``n_keep`` leaving block
      ``i`` are thrown away by the next hook (VPT-deep replaces its prompts), so the
      block need not compute their outputs.

    In-block hooks, called by :func:`block_forward` in the blocks where
    ``acts_in(i)``; a block computes only its first ``n_out`` tokens' outputs, so
    every tensor below has ``n_out`` rows except the attention input and k, v:

    - ``qkv(i, x, q, k, v) -> (q, k, v)``: x = ``ln_1`` output (B, L, width);
      q (B, n_out, width) from x's first n_out rows, k and v (B, L, width), biases added.
    - ``attn_out(i, h) -> h``: after the attention out-projection.
    - ``fc1(i, h) -> h`` / ``fc2(i, h) -> h``: after the MLP's ``c_fc`` / ``c_proj``.
    - ``mlp(i, x, h) -> h``: x = the post-attention residual stream (the MLP's input
      before ``ln_2``), h = the MLP branch's output; returns the branch's new output,
      which the block adds to x.

    Only overridden hooks are called (:meth:`ViTBackbone.plan_hooks` works out which,
    once); a block no module acts in runs open_clip's block unchanged. Parameters may
    be fp32 or fp16, activations too: parameters are cast to the activations' dtype at
    use, LayerNorms compute in fp32 (as CLIP's own) and return the activations' dtype.
    """

    def before_block(self, i: int, x: torch.Tensor, n_keep: int) -> torch.Tensor:
        return x

    def drops_extra_tokens(self, i: int) -> bool:
        return True

    def acts_in(self, i: int) -> bool:
        return True

    def qkv(self, i: int, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        return q, k, v

    def attn_out(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return h

    def fc1(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return h

    def fc2(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return h

    def mlp(self, i: int, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h

    def overrides(self, hook: str) -> bool:
        return getattr(type(self), hook) is not getattr(PeftModule, hook)


class BlockwisePeft(PeftModule):
    """A PEFT module with its own parameters in some blocks (all, or the last K with
    ``partial K``): ``self.blocks[str(i)]`` holds block i's."""

    def __init__(self, blocks: dict[int, nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleDict({str(i): m for i, m in blocks.items()})

    def acts_in(self, i: int) -> bool:
        return str(i) in self.blocks


class ViTBackbone(ImageTower):
    """Frozen CLIP ViT image tower returning the pre-projection CLS feature.

    Feature = ``ln_post`` of the class token after the last block, *before* the
    visual projection (docs/method.md §1): a ``width``-dim vector.
    """

    def __init__(self, visual: nn.Module, peft: list[PeftModule] | None = None,
                 mean=OPENAI_MEAN, std=OPENAI_STD):
        if not hasattr(visual, "transformer") or getattr(visual, "attn_pool", None) is not None \
                or getattr(visual, "pool_type", "tok") != "tok":
            raise UserError("backbone: only CLIP ViT image towers with class-token pooling "
                            "are supported")
        super().__init__(visual, mean, std)
        self.peft = nn.ModuleList(peft or [])
        self.width = self.feat_dim = visual.transformer.width
        self.proj = visual.proj  # pre-projection feature -> CLIP's joint space
        self.num_blocks = len(visual.transformer.resblocks)
        self.patch_size = tuple(visual.conv1.kernel_size)
        self.image_size = tuple(visual.image_size)
        self.grad_checkpointing = False
        self.plan_hooks()

    def weight_scope(self, partial: int | None,
                     ln_post: bool = True) -> list[tuple[str, nn.Parameter]]:
        """Every weight that computes the feature: all but ``proj``, which maps it into
        CLIP's joint space and is read only by text init and zero-shot; with
        ``partial K`` the last K blocks, and ``ln_post``, the final LayerNorm above them,
        unless ``ln_post`` is False (the released ``block_num``)."""
        visual = self.visual
        if partial is None:
            return [(n, p) for n, p in visual.named_parameters() if n != "proj"]
        blocks = visual.transformer.resblocks
        scope = [(f"transformer.resblocks.{i}.{n}", p)
                 for i in range(len(blocks) - partial, len(blocks))
                 for n, p in blocks[i].named_parameters()]
        if not ln_post:
            return scope
        return scope + [(f"ln_post.{n}", p) for n, p in visual.ln_post.named_parameters()]

    def plan_hooks(self) -> None:
        """Which PEFT module is called where, worked out once (call again after
        changing ``self.peft``): the token hooks, whether block i may skip the outputs
        of extra tokens, and block i's in-block hooks (none: the plain block runs)."""
        self._token_hooks = [m for m in self.peft if m.overrides("before_block")]
        self._trims = [all(m.drops_extra_tokens(i) for m in self.peft)
                       for i in range(self.num_blocks)]
        self._block_hooks = []
        for i in range(self.num_blocks):
            active = [m for m in self.peft if m.acts_in(i)]
            hooks = {name: tuple(m for m in active if m.overrides(name))
                     for name in IN_BLOCK_HOOKS}
            self._block_hooks.append((BlockHooks(i, **hooks),) if any(hooks.values()) else ())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Exact CLIP math, minus the outputs nobody reads: the last block computes the
        class token only (the feature), and a block whose extra tokens the next PEFT
        hook drops (VPT-deep's prompts) computes the class and patch tokens only. With
        VPT-deep 50 on ViT-B/16 that is about a sixth less work per image."""
        visual = self.visual
        x = visual._embeds(self.normalize(images).to(visual.conv1.weight.dtype))
        n_keep = x.shape[1]
        last = self.num_blocks - 1
        for i, block in enumerate(visual.transformer.resblocks):
            for module in self._token_hooks:
                x = module.before_block(i, x, n_keep)
            if i == last:
                n_out = 1
            elif self._trims[i]:
                n_out = min(n_keep, x.shape[1])
            else:
                n_out = x.shape[1]
            hooks = self._block_hooks[i]  # () or (BlockHooks,): no hooks, no extra argument
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block_forward, block, x, n_out, *hooks, use_reentrant=False)
            else:
                x = block_forward(block, x, n_out, *hooks)
        return visual.ln_post(x[:, 0]).float()

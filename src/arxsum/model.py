"""LSG-BART in plain PyTorch: nn code only, no I/O.

Semantics follow the model's published implementation (lsg-converter 0.1.9,
`bart/modeling_lsg_bart.py`, on transformers 4.40.2 BART):

- encoder: token + learned positions (BART's offset of 2), `num_global_tokens` learned global
  embeddings prepended, then `layernorm_embedding`; inputs longer than 2 x `block_size` are padded to
  a multiple of `block_size` (`adaptive`); full attention while the text fits in two blocks,
  otherwise each block of queries attends to the global tokens and to its own and both neighbouring
  blocks (LSG "local" attention), global tokens attend to everything; post-LN BART layers.
- the encoder output keeps the global tokens (`pass_global_tokens_to_decoder`) and the decoder
  cross-attends to them with a mask padded with ones;
- decoder: plain BART; LM head tied to the shared embedding, plus `final_logits_bias`.

Parameter names equal the reference's state-dict keys, so loading maps keys one to one.
Shapes: B documents, N = B x beams decoder rows, H heads, T tokens, G global tokens, D = d_model,
hd = D / H, S = encoder length seen by the decoder.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# The sparse attention variants of LSG; the arXiv model uses none of them.
SPARSITY_TYPES = ("norm", "pooling", "lsh", "stride", "block_stride", "bos_pooling")
POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding: positions are looked up at index + 2
# Rows (beams x documents) up to which a product goes through the CPU kernels, when the model has
# them (use_kernels): they stream a matrix once per 8 rows; for more rows torch's GEMMs win.
FAST_ROWS = 32
# Rows of the encoder's row-wise part (out_proj, norms, feed-forward) taken at a time on CPU: its
# intermediates (the feed-forward's 4x-wide one included) stay a few MB, reused from malloc's heap
# and warm in the cache, instead of fresh ~100-200 MB buffers that the kernel pages in zeroed at each
# layer. 16k tokens: the float32 encoder 10.8 -> 10.4 s and 220 MB less peak memory; bfloat16 as fast
# as before, 170 MB less.
ENCODER_CHUNK = 2048


@dataclass(frozen=True)
class LSGBartConfig:
    """The fields of a checkpoint's config.json that define the network (names as in the file)."""

    vocab_size: int = 50265
    d_model: int = 768
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 12
    decoder_attention_heads: int = 12
    encoder_ffn_dim: int = 3072
    decoder_ffn_dim: int = 3072
    max_position_embeddings: int = 16384
    activation_function: str = "gelu"
    scale_embedding: bool = False
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    tie_word_embeddings: bool = True
    # LSG fields
    block_size: int = 128
    num_global_tokens: int = 1
    adaptive: bool = True
    pass_global_tokens_to_decoder: bool = True
    pool_with_global: bool = True
    mask_first_token: bool = False
    sparsity_type: str | None = "norm"
    sparse_block_size: int = 128
    sparsity_factor: int = 2

    @classmethod
    def from_dict(cls, raw: dict) -> LSGBartConfig:
        """Build from config.json's dict; unknown keys are ignored, bad values raise ValueError."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        # The reference clamps the number of global tokens to [1, 512].
        if "num_global_tokens" in values:
            values["num_global_tokens"] = max(1, min(512, int(values["num_global_tokens"])))
        config = cls(**values)
        config.validate()
        return config

    @property
    def uses_sparse_attention(self) -> bool:
        # The reference computes sparse tokens only when all three are set (see not_causal_forward).
        return (self.sparsity_type in SPARSITY_TYPES and bool(self.sparse_block_size)
                and self.sparsity_factor > 0)

    def validate(self) -> None:
        if self.uses_sparse_attention:
            raise ValueError(
                f"sparsity_type {self.sparsity_type!r} with sparse_block_size {self.sparse_block_size} is not "
                "supported: arxsum implements LSG's local + global attention only (sparsity_type 'none')")
        if self.d_model % self.encoder_attention_heads or self.d_model % self.decoder_attention_heads:
            raise ValueError("d_model must be divisible by the number of attention heads")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"unsupported activation_function {self.activation_function!r}; "
                             f"known: {', '.join(sorted(ACTIVATIONS))}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be positive, got {self.block_size}")

    @property
    def max_input_tokens(self) -> int:
        """The longest input the encoder can take once adaptive padding rounds it up to a block."""
        n, b = self.max_position_embeddings, self.block_size
        if not self.adaptive or n <= 2 * b or n % b == 0:
            return n
        return n // b * b


ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) of 1 = attend, 0 = padding -> (B, 1, 1, T) of 0 / finfo.min, as transformers builds it."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class AncestryCache(NamedTuple):
    """A decoder layer's self-attention cache when the CPU kernels follow the beams' histories:
    slot [p, j] of keys/values (max_len, N, H, hd) holds what row j wrote at position p, and row r's
    history at position p is in slot [p, ancestry[p, r]] ((max_len, N) int64, shared by the layers).
    Reordering the beams permutes `ancestry` alone."""

    keys: torch.Tensor
    values: torch.Tensor
    ancestry: torch.Tensor


class PackedWeight:
    """A linear layer's weight in oneDNN's blocked layout, for bfloat16 GEMMs over many rows on CPU
    (the encoder's: ~10% faster than F.linear here; the same products and float32 sums, in an order
    that can differ by a bfloat16 rounding step on small shapes: bit for bit the same at the
    encoder's). oneDNN tensors cannot be deep-copied: a copy of the model packs its copied weight again."""

    ROWS_HINT = 16384  # the row count oneDNN picks the layout for; any count works

    def __init__(self, weight: torch.Tensor):
        self.source = weight
        self.tensor = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), self.ROWS_HINT)

    def __deepcopy__(self, memo):
        return PackedWeight(copy.deepcopy(self.source, memo))

    @staticmethod
    def supported(dtype: torch.dtype) -> bool:
        return (dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Linear(nn.Linear):
    """nn.Linear with fast CPU paths: for the few rows of a decoding step, `kernels` and `tiled` (its
    weight in their layout, set by LSGBartForConditionalGeneration.use_kernels); for many rows in
    bfloat16, `packed` (set by use_packed_weights), which also fuses a GELU (computed on the float32
    sums before rounding to bfloat16: as accurate as the unfused pair or more); or, for many rows in
    bfloat16 where float32 GEMMs are the faster (`widen`, set by use_float32_products), float32
    products of the bfloat16 values, the activation applied before the one rounding to bfloat16."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.kernels = None
        self.tiled = None
        self.packed = None
        self.widen = False

    def forward(self, x: torch.Tensor, activation: str | None = None) -> torch.Tensor:
        """x (..., in) -> (..., out), then the named activation (ACTIVATIONS) if any."""
        few = x.numel() <= FAST_ROWS * x.shape[-1]
        if self.widen and not few:
            y = F.linear(x.float(), self.weight.float(), None if self.bias is None else self.bias.float())
            return (y if activation is None else ACTIVATIONS[activation](y)).to(x.dtype)
        if self.packed is not None and not few:
            fused = activation == "gelu"
            y = torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed.tensor, self.bias,
                                                   "gelu" if fused else "none", [], "none" if fused else "")
            return y if fused or activation is None else ACTIVATIONS[activation](y)
        if self.kernels is None or not few:
            y = super().forward(x)
        else:
            rows = x.reshape(-1, x.shape[-1])
            y = self.kernels.linear(rows, self.tiled, self.bias, self.out_features).view(*x.shape[:-1], -1)
        return y if activation is None else ACTIVATIONS[activation](y)


class Attention(nn.Module):
    """q/k/v/out projections shared by every attention kind; the kinds differ in which keys they see."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = Linear(d_model, d_model)
        self.k_proj = Linear(d_model, d_model)
        self.v_proj = Linear(d_model, d_model)
        self.out_proj = Linear(d_model, d_model)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, H, T, hd)"""
        n, t, _ = x.shape
        return x.view(n, t, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H, T, hd) -> (N, T, D)"""
        n, h, t, d = x.shape
        return x.transpose(1, 2).reshape(n, t, h * d)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, D) -> keys and values, each (N, H, T, hd)"""
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))


class LSGSelfAttention(Attention):
    """Encoder self-attention: global tokens see all; each block sees globals + 3 neighbouring blocks."""

    def __init__(self, d_model: int, num_heads: int, block_size: int, num_global_tokens: int):
        super().__init__(d_model, num_heads)
        self.block_size = block_size
        self.num_global = num_global_tokens
        self.kernels = None  # set by LSGBartForConditionalGeneration.use_kernels
        self.widen = False  # torch's attention in float32 on bfloat16 projections (use_float32_products)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x (B, G+T, D), key_mask (B, 1, 1, G+T) additive -> (B, G+T, D)"""
        return self.out_proj(self.context(x, key_mask))

    def context(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """What forward computes before out_proj: the heads' outputs, merged, (B, G+T, D)."""
        g, t = self.num_global, x.shape[1] - self.num_global
        if self.kernels is not None and t > 2 * self.block_size and t % self.block_size == 0:
            return self._kernel_attention(x, key_mask)
        q = self.split_heads(self.q_proj(x))
        k, v = self.project_kv(x)
        if self.widen:  # the bfloat16 projections' values, attended in float32; one rounding at the end
            q, k, v, key_mask = q.float(), k.float(), v.float(), key_mask.float()
        if t <= 2 * self.block_size:  # the local window covers everything: plain full attention
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        else:
            ctx_global = F.scaled_dot_product_attention(q[:, :, :g], k, v, attn_mask=key_mask)
            if x.device.type == "cpu":  # a head at a time: the same values; its windows (13.6 MB of float32
                # keys and values at 16k tokens, not 163 MB) stay in the cache (Zen 3: 0.79 -> 0.61 s a layer)
                ctx_local = torch.cat([self.local_attention(q[:, h: h + 1, g:], k[:, h: h + 1], v[:, h: h + 1], key_mask)
                                       for h in range(q.shape[1])], dim=1)
            else:
                ctx_local = self.local_attention(q[:, :, g:], k, v, key_mask)
            ctx = torch.cat([ctx_global, ctx_local], dim=2)
        return self.merge_heads(ctx).to(x.dtype)

    def _kernel_attention(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """context() by the CPU kernel: it reads the projections in their (B, S, D) layout and writes
        the context in it, so neither the 3x-expanded key/value windows nor the heads' transposes are
        materialised."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return self.kernels.local_attention(q, k, v, key_mask.reshape(x.shape[0], -1).float(),
                                            self.num_global, self.block_size)

    def local_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        key_mask: torch.Tensor) -> torch.Tensor:
        """q (B, H, T, hd) for the non-global tokens, T a multiple of block_size -> (B, H, T, hd).

        Block i's queries attend to [globals, block i-1, block i, block i+1]; the missing neighbours
        of the first and last blocks are zero keys under a finfo.min mask, as in the reference.
        """
        b, h, t, d = q.shape
        bs, g = self.block_size, self.num_global
        nb = t // bs
        keys = self._windows(k[:, :, :g], k[:, :, g:], nb)  # (B, H*nb, G+3bs, hd)
        values = self._windows(v[:, :, :g], v[:, :, g:], nb)
        mask_global, mask_local = key_mask[..., :g], key_mask[..., g:]  # (B,1,1,G), (B,1,1,T)
        mask_local = F.pad(mask_local, (bs, bs), value=torch.finfo(key_mask.dtype).min)
        mask_local = mask_local.unfold(-1, 3 * bs, bs)  # (B, 1, 1, nb, 3bs)
        mask = torch.cat([mask_global.unsqueeze(3).expand(-1, -1, -1, nb, -1), mask_local], dim=-1)
        mask = mask.transpose(2, 3).expand(b, h, nb, 1, g + 3 * bs).reshape(b, h * nb, 1, g + 3 * bs)
        out = F.scaled_dot_product_attention(q.reshape(b, h * nb, bs, d), keys, values, attn_mask=mask)
        return out.reshape(b, h, t, d)  # not a view: CUDA kernels may return another memory layout

    def _windows(self, x_global: torch.Tensor, x_local: torch.Tensor, nb: int) -> torch.Tensor:
        """(B, H, G, hd), (B, H, T, hd) -> (B, H*nb, G+3bs, hd): per block, globals then 3 blocks."""
        b, h, g, d = x_global.shape
        bs = self.block_size
        padded = F.pad(x_local, (0, 0, bs, bs))  # (B, H, T+2bs, hd)
        windows = padded.unfold(2, 3 * bs, bs).transpose(-1, -2)  # (B, H, nb, 3bs, hd), a view
        out = torch.cat([x_global.unsqueeze(2).expand(b, h, nb, g, d), windows], dim=3)
        return out.view(b, h * nb, g + 3 * bs, d)


class EncoderLayer(nn.Module):
    def __init__(self, config: LSGBartConfig):
        super().__init__()
        d = config.d_model
        self.self_attn = LSGSelfAttention(d, config.encoder_attention_heads, config.block_size,
                                          config.num_global_tokens)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = Linear(d, config.encoder_ffn_dim)
        self.fc2 = Linear(config.encoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation = config.activation_function

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x (B, G+T, D) -> (B, G+T, D); post-LN as in BART. After the attention every row is computed
        on its own: on CPU, in near-even chunks of at most ENCODER_CHUNK rows."""
        ctx = self.self_attn.context(x, key_mask)
        if x.device.type != "cpu":
            return self._rows(x, ctx)
        out = torch.empty_like(x)
        rows, width = x.shape[0] * x.shape[1], x.shape[2]
        x_rows, ctx_rows, out_rows = x.reshape(rows, width), ctx.reshape(rows, width), out.view(rows, width)
        chunk = -(-rows // -(-rows // ENCODER_CHUNK))  # as many chunks as needed, near-even: none tiny
        for start in range(0, rows, chunk):
            out_rows[start: start + chunk] = self._rows(x_rows[start: start + chunk], ctx_rows[start: start + chunk])
        return out

    def _rows(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """x and the attention's context (..., D) -> the layer's output rows"""
        x = self.self_attn_layer_norm(x + self.self_attn.out_proj(ctx))
        x = self.final_layer_norm(x + self.fc2(self.fc1(x, self.activation)))
        if x.dtype == torch.float16 and not torch.isfinite(x).all():
            clamp = torch.finfo(x.dtype).max - 1000  # BartEncoderLayer's fp16 overflow guard
            x = x.clamp(-clamp, clamp)
        return x


@dataclass
class EncoderOutput:
    hidden: torch.Tensor  # (B, S, D): what the decoder cross-attends to (globals first, if passed)
    mask: torch.Tensor  # (B, S) 1 = attend, 0 = padding


class Encoder(nn.Module):
    def __init__(self, config: LSGBartConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed_scale = math.sqrt(d) if config.scale_embedding else 1.0
        self.embed_positions = nn.Embedding(config.max_position_embeddings + POSITION_OFFSET, d)
        self.global_embeddings = nn.Embedding(512, d)  # the reference always allocates 512 rows
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.layernorm_embedding = nn.LayerNorm(d)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                embed_tokens: nn.Embedding) -> EncoderOutput:
        """input_ids, attention_mask (B, T) -> EncoderOutput with S = G + T (or T)."""
        c = self.config
        b, t = input_ids.shape
        if c.mask_first_token:
            attention_mask = attention_mask.clone()
            attention_mask[:, 0] = 0
        input_ids, mask = self._pad_to_blocks(input_ids, attention_mask)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device) + POSITION_OFFSET
        x = embed_tokens(input_ids) * self.embed_scale + self.embed_positions(positions)
        x = torch.cat([self.global_embeddings.weight[: c.num_global_tokens].expand(b, -1, -1), x], dim=1)
        x = self.layernorm_embedding(x)
        key_mask = additive_mask(F.pad(mask, (c.num_global_tokens, 0), value=1), x.dtype)
        for layer in self.layers:
            x = layer(x, key_mask)
        return self._decoder_view(x, attention_mask, t)

    def _pad_to_blocks(self, input_ids: torch.Tensor, mask: torch.Tensor):
        """Adaptive padding: inputs longer than two blocks are padded to a multiple of block_size."""
        c = self.config
        t = input_ids.shape[1]
        rem = t % c.block_size
        if c.adaptive and t > 2 * c.block_size and rem:
            extra = c.block_size - rem
            input_ids = F.pad(input_ids, (0, extra), value=c.pad_token_id)
            mask = F.pad(mask, (0, extra), value=0)
        return input_ids, mask

    def _decoder_view(self, x: torch.Tensor, mask: torch.Tensor, t: int) -> EncoderOutput:
        """Drop the adaptive padding; keep or pool the global tokens as the config says."""
        c = self.config
        g = c.num_global_tokens
        if c.pass_global_tokens_to_decoder:
            return EncoderOutput(x[:, : g + t], F.pad(mask, (g, 0), value=1))
        x = x[:, : g + t]
        if c.pool_with_global:  # the first token's output is replaced by the first global token's
            x = x.clone()
            x[:, g] = x[:, 0]
        return EncoderOutput(x[:, g:], mask)


class DecoderLayer(nn.Module):
    def __init__(self, config: LSGBartConfig):
        super().__init__()
        d = config.d_model
        self.self_attn = Attention(d, config.decoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = Attention(d, config.decoder_attention_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = Linear(d, config.decoder_ffn_dim)
        self.fc2 = Linear(config.decoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.activation = config.activation_function
        self.kernels = None  # set by LSGBartForConditionalGeneration.use_kernels
        self.fused = None  # the layer's weights for kernels.decoder_layers (cpukernels.LayerWeights), likewise

    def forward(self, x: torch.Tensor, cross: tuple[torch.Tensor, torch.Tensor], cross_mask: torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor] | None, start: int | torch.Tensor) -> torch.Tensor:
        """x (N, L, D) at positions start..start+L-1 -> (N, L, D).

        cross: keys and values (see LSGBartForConditionalGeneration.cross_kv), shared by the N / B rows
        of each document;
        cross_mask (B, 1, 1, S) additive; cache: self-attention keys and values (max_len, N, H, hd)
        written at [start, start + L), or None to attend causally within x alone (the AncestryCache of
        the CPU kernels is Decoder.forward's: all layers in one kernels call); start: an int, or for
        one token per row a tensor: 0-d (the same position for every row) or (N,), each row's own
        (continuous batching: a document that joined the batch later is at an earlier position); a
        tensor start attends the whole cache under a mask of each row's filled positions (fixed shapes,
        for CUDA graphs).
        """
        x = self.self_attn_layer_norm(x + self._self_attention(x, cache, start))
        x = self.encoder_attn_layer_norm(x + self._cross_attention(x, cross, cross_mask))
        x = self.final_layer_norm(x + self.fc2(self.fc1(x, self.activation)))
        return x

    def _self_attention(self, x, cache, start):
        attn = self.self_attn
        q = attn.split_heads(attn.q_proj(x))
        k, v = attn.project_kv(x)
        length = x.shape[1]
        if isinstance(start, torch.Tensor):  # static shapes, for CUDA graphs: one token at a position
            return attn.out_proj(attn.merge_heads(self._static_self_attention(q, k, v, cache, start)))
        if cache is not None:  # cache layout (max_len, N, H, hd): a step writes one contiguous slab
            cache_k, cache_v = cache
            cache_k[start: start + length] = k.permute(2, 0, 1, 3)
            cache_v[start: start + length] = v.permute(2, 0, 1, 3)
            k = cache_k[: start + length].permute(1, 2, 0, 3)
            v = cache_v[: start + length].permute(1, 2, 0, 3)
        if length == 1:
            ctx = F.scaled_dot_product_attention(q, k, v)
        else:  # causal over the new tokens, full over the cached prefix
            keep = torch.ones(length, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - length)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return attn.out_proj(attn.merge_heads(ctx))

    @staticmethod
    def _static_self_attention(q, k, v, cache, position: torch.Tensor) -> torch.Tensor:
        """One token per row at `position` (0-d: every row; (N,): each row's own), written into the
        cache slot [position[r], r], attending to the whole cache under a mask of each row's filled
        positions, so every shape stays the same from step to step. The unfilled positions must hold
        finite values (zeros, or an earlier document's): a masked weight is 0, and 0 x NaN would
        still be NaN."""
        cache_k, cache_v = cache
        n = q.shape[0]
        at = position.view(-1).expand(n)  # (N,)
        rows = torch.arange(n, device=q.device)
        cache_k[at, rows] = k[:, :, 0]  # (N, H, hd) into slots (max_len, N, H, hd)
        cache_v[at, rows] = v[:, :, 0]
        filled = torch.arange(cache_k.shape[0], device=q.device) <= at[:, None]  # (N, S)
        return F.scaled_dot_product_attention(q, cache_k.permute(1, 2, 0, 3), cache_v.permute(1, 2, 0, 3),
                                              attn_mask=filled[:, None, None, :])

    def _cross_attention(self, x, cross, cross_mask):
        """Plain softmax(q K^T / sqrt(hd) + mask) V. The rows of one document share its keys: they are
        folded into the query length. torch: K stored transposed, two contiguous batched GEMMs (for the
        few queries of a decoding step over 16k keys they beat the flash kernel on CPU, which tiles the
        keys into hundreds of tiny GEMMs). With kernels: K in their tiled layout, one fused call."""
        attn = self.encoder_attn
        n, length, _ = x.shape
        keys, v = cross  # torch: (B, H, hd, S), v (B, H, S, hd); kernels: their layouts
        b = v.shape[0]
        q = attn.split_heads(attn.q_proj(x)) * attn.head_dim ** -0.5  # (N, H, L, hd)
        q = q.view(b, n // b, attn.num_heads, length, attn.head_dim).transpose(1, 2)
        q = q.reshape(b, attn.num_heads, (n // b) * length, attn.head_dim)
        if self.kernels is not None:
            ctx = self.kernels.cross_attention(q, keys, v, cross_mask.reshape(b, -1))
        else:
            scores = torch.matmul(q, keys)  # (B, H, rows x L, S)
            scores += cross_mask
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, rows x L, hd)
        ctx = ctx.view(b, attn.num_heads, n // b, length, attn.head_dim).transpose(1, 2)
        ctx = ctx.reshape(n, attn.num_heads, length, attn.head_dim)
        return attn.out_proj(attn.merge_heads(ctx))


class Decoder(nn.Module):
    def __init__(self, config: LSGBartConfig):
        super().__init__()
        d = config.d_model
        self.embed_scale = math.sqrt(d) if config.scale_embedding else 1.0
        self.embed_positions = nn.Embedding(config.max_position_embeddings + POSITION_OFFSET, d)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.layernorm_embedding = nn.LayerNorm(d)

    def forward(self, input_ids: torch.Tensor, embed_tokens: nn.Embedding, cross: list, cross_mask: torch.Tensor,
                caches: list | None = None, start: int | torch.Tensor = 0) -> torch.Tensor:
        """input_ids (N, L) -> hidden (N, L, D). cross/caches: one entry per layer (see DecoderLayer)."""
        # start: an int, or a tensor, 0-d or (N,) per row (see DecoderLayer.forward)
        length = input_ids.shape[1]
        if isinstance(start, int):  # the positions' rows as a slice: one operation, not three
            at = start + POSITION_OFFSET
            if at + length > self.embed_positions.num_embeddings:
                raise IndexError(f"decoder position {start + length - 1} is past the model's "
                                 f"{self.embed_positions.num_embeddings - POSITION_OFFSET} positions")
            positions = self.embed_positions.weight[at: at + length]  # (L, D)
        else:
            first = start[:, None] if start.dim() == 1 else start  # (N, 1) per row
            positions = self.embed_positions(torch.arange(length, device=input_ids.device) + (first + POSITION_OFFSET))
        tokens = embed_tokens(input_ids)
        x = self.layernorm_embedding((tokens if self.embed_scale == 1.0 else tokens * self.embed_scale) + positions)
        if caches and isinstance(caches[0], AncestryCache):  # the CPU kernels: every layer in one call
            return self._kernels_step(x, cross, cross_mask, caches, start)
        for i, layer in enumerate(self.layers):
            x = layer(x, cross[i], cross_mask, None if caches is None else caches[i], start)
        return x

    def _kernels_step(self, x: torch.Tensor, cross: list, cross_mask: torch.Tensor, caches: list,
                      start: int | torch.Tensor) -> torch.Tensor:
        """x (N, 1, D) -> (N, 1, D) through every layer's kernels.decoder_layers in one call, the layers'
        caches AncestryCaches (sharing one ancestry table)."""
        if x.shape[1] != 1:
            raise ValueError("an AncestryCache takes one token per row and step")
        kernels = self.layers[0].kernels
        out = kernels.decoder_layers([layer.fused for layer in self.layers], x.view(x.shape[0], -1), cross,
                                     cross_mask.view(cross_mask.shape[0], -1),
                                     [(c.keys, c.values) for c in caches], caches[0].ancestry, start)
        return out.view(x.shape)


class LSGBartModel(nn.Module):
    def __init__(self, config: LSGBartConfig):
        super().__init__()
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)


class LSGBartForConditionalGeneration(nn.Module):
    """The whole model. `forward` is the uncached teacher-forced pass; generation uses the pieces:
    `encode` once per batch, `cross_kv` once per document, `decode` once per step."""

    def __init__(self, config: LSGBartConfig):
        super().__init__()
        self.config = config
        self.model = LSGBartModel(config)
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        # Only untied checkpoints carry their own LM head; tied ones reuse model.shared.
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.d_model, config.vocab_size,
                                                                        bias=False)
        self.kernels = None
        self._lm_head_tiled = None

    def use_kernels(self, kernels, *, encoder_attention: bool = True, decoder_step: bool = True,
                    lm_head: bool = True) -> None:
        """Route the decoding step's few-row products through `kernels` (cpukernels.CpuKernels), or
        back to torch with None: each decoder layer's step as one call (64-wide heads; its
        projections, self- and cross-attention, feed-forward and norms), the LM head, and the
        encoder's LSG attention; each of the three can be left to torch (cpuplan chooses). They keep
        copies of those weights in their own layout (+0.35 GB in float32): call this once the model
        has its device and dtype."""
        self.kernels = kernels
        for layer in self.model.encoder.layers:
            heads_fit = kernels is not None and layer.self_attn.head_dim == kernels.head_dim
            layer.self_attn.kernels = kernels if heads_fit and encoder_attention else None
        step_kernels = kernels if decoder_step else None
        for layer in self.model.decoder.layers:
            kernels = step_kernels
            heads_fit = kernels is not None and layer.encoder_attn.head_dim == kernels.head_dim
            layer.kernels = kernels if heads_fit else None
            for linear in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                           layer.self_attn.out_proj, layer.encoder_attn.q_proj, layer.encoder_attn.out_proj,
                           layer.fc1, layer.fc2):
                linear.kernels = kernels
                linear.tiled = None if kernels is None else kernels.tile(linear.weight)
            layer.fused = kernels.layer_weights(layer) if heads_fit else None
        kernels = self.kernels if lm_head else None
        self._lm_head_tiled = None if kernels is None else kernels.tile(self._lm_head_weight())

    def use_packed_weights(self, enabled: bool = True) -> bool:
        """Give the products over many rows (the encoder's and the cross-attention keys and values)
        weights packed for oneDNN (PackedWeight), or take them back. Only for bfloat16 on a CPU
        whose oneDNN supports it; returns whether they are in use. Call it once the model has its
        device and dtype (+0.1 GB)."""
        p = self.final_logits_bias
        enabled = enabled and p.device.type == "cpu" and PackedWeight.supported(p.dtype)
        for linear in self._many_row_linears():
            linear.packed = PackedWeight(linear.weight) if enabled else None
        return enabled

    def use_float32_products(self, enabled: bool = True) -> bool:
        """For bfloat16 on a CPU whose bfloat16 GEMMs are slower than its float32 ones (no native
        bfloat16: AVX2 machines, where torch's bfloat16 GEMM ran at 16 GFLOP/s against 91 in float32):
        the products over many rows (the encoder's, the cross-attention keys and values) and the
        encoder's attention on torch compute in float32 from the bfloat16 values and round each
        output to bfloat16 once, as torch's bfloat16 operations do (float32 sums); the attention's
        probabilities are not rounded to bfloat16 on the way. The weights stay bfloat16 (widened per
        product: no copy kept). Returns whether in use."""
        p = self.final_logits_bias
        enabled = enabled and p.device.type == "cpu" and p.dtype == torch.bfloat16
        for linear in self._many_row_linears():
            linear.widen = enabled
        for layer in self.model.encoder.layers:
            layer.self_attn.widen = enabled
        return enabled

    def _many_row_linears(self) -> list[Linear]:
        out = []
        for layer in self.model.encoder.layers:
            a = layer.self_attn
            out += [a.q_proj, a.k_proj, a.v_proj, a.out_proj, layer.fc1, layer.fc2]
        for layer in self.model.decoder.layers:
            out += [layer.encoder_attn.k_proj, layer.encoder_attn.v_proj]
        return out

    def _apply(self, fn, *args, **kwargs):
        """.to(), .float(), ... : the kernels' and oneDNN's weight copies would go stale: dropped."""
        if self.kernels is not None:
            self.use_kernels(None)
        self.use_packed_weights(False)
        self.use_float32_products(False)
        return super()._apply(fn, *args, **kwargs)

    def _lm_head_weight(self) -> torch.Tensor:
        return self.model.shared.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T), decoder_input_ids (B, L) -> logits (B, L, vocab)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(input_ids, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        enc = self.encode(input_ids, attention_mask)
        hidden = self.decode(decoder_input_ids, self.cross_kv(enc.hidden), self.cross_mask(enc))
        return self.logits(hidden)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncoderOutput:
        return self.model.encoder(input_ids, attention_mask, self.model.shared)

    def cross_kv(self, encoder_hidden: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(B, S, D) -> per decoder layer, cross-attention keys and values, computed once per document
        and read at every step: keys transposed (B, H, hd, S) and values (B, H, S, hd), or both in the
        kernels' layouts (CpuKernels.tile, tile_values)."""
        out = []
        for layer in self.model.decoder.layers:
            k, v = layer.encoder_attn.project_kv(encoder_hidden)
            if layer.kernels is not None:
                out.append((layer.kernels.tile(k), layer.kernels.tile_values(v)))
            else:
                out.append((k.transpose(-1, -2).contiguous(), v.contiguous()))
        return out

    def cross_mask(self, enc: EncoderOutput) -> torch.Tensor:
        return additive_mask(enc.mask, enc.hidden.dtype)

    def decode(self, decoder_input_ids: torch.Tensor, cross: list, cross_mask: torch.Tensor,
               caches: list | None = None, start: int | torch.Tensor = 0) -> torch.Tensor:
        return self.model.decoder(decoder_input_ids, self.model.shared, cross, cross_mask, caches, start)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, L, D) -> (N, L, vocab)"""
        rows = hidden.reshape(-1, hidden.shape[-1])
        if self._lm_head_on_kernels(rows):
            logits = self.kernels.linear(rows, self._lm_head_tiled, None, self.config.vocab_size)
        else:
            # weight @ rows.T streams the (vocab, D) matrix once; for the few rows of a decoding step
            # it runs about twice as fast on CPU as F.linear's (rows, D) x (D, vocab) kernel.
            logits = (self._lm_head_weight() @ rows.T).T
        logits = logits + self.final_logits_bias
        return logits.reshape(*hidden.shape[:-1], -1)

    def _lm_head_on_kernels(self, rows: torch.Tensor) -> bool:
        """Whether these (R, D) rows go through the kernels' LM head (a decoding step's few rows)."""
        return self._lm_head_tiled is not None and rows.shape[0] <= FAST_ROWS

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, D) hidden states of a decoding step -> log-probabilities (N, vocab) in float32: the
        logits as `logits` computes them (in the model's dtype), widened, log-softmaxed. With the
        kernels' LM head, the bias and the widening happen in its pass over the weight."""
        if self._lm_head_on_kernels(hidden):
            logits = self.kernels.linear(hidden, self._lm_head_tiled, self.final_logits_bias.view(-1),
                                         self.config.vocab_size, logits=True)
        else:
            logits = self.logits(hidden).float()
        return torch.log_softmax(logits, dim=-1)

    def new_caches(self, rows: int, max_length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Preallocated self-attention caches: per decoder layer, keys and values (max_len, N, H, hd),
        zeros (a step with per-row positions reads the unfilled slots under a mask: they must be
        finite)."""
        c = self.config
        shape = (max_length, rows, c.decoder_attention_heads, c.d_model // c.decoder_attention_heads)
        p = self.final_logits_bias
        return [(p.new_zeros(shape), p.new_zeros(shape)) for _ in range(c.decoder_layers)]


def shift_tokens_right(input_ids: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    shifted = input_ids.new_zeros(input_ids.shape)
    shifted[:, 1:] = input_ids[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)

"""Sequence packing: a batch's item texts laid end to end in rows of a fixed token capacity.

Right padding in `model.length_buckets` length groups still leaves ~20% of the LM's token
positions as padding on MovieLens-like titles. Packing places the texts (best-fit
decreasing, deterministic) into rows of `capacity` tokens and encodes them with

- a block-diagonal additive attention mask [rows, 1, C, C] (0 where a token may attend,
  the compute dtype's finfo.min where not): a token sees only its own text, and in a
  decoder LM only its own text's earlier tokens. HF (transformers 5.x `masking_utils.
  _preprocess_mask_arguments`) passes a 4D mask through unchanged to both the eager and the
  SDPA attention of BERT and Qwen2, which add it to the scores;
- position ids restarting at 0 for every text (BERT's learned positions, Qwen2's RoPE);
- token type ids of zeros where the LM takes them (BERT).

The row's tail padding is one more block of its own, so no attention row is empty (no NaN)
and a padding slot never mixes into a real token. Pooling (cls / mean / last) reads each
text's own segment and returns [N, H] in the original order.

Cost rule (`packing_pays`, used by `model.packing=auto`): one LM call over rows of width w
costs ~ rows * w * (1 + w / (ATTENTION_SPAN * H)): per token the linears (~24 H^2 FLOPs
forward, QKVO + a 4H MLP) plus attention over its span (~4 w H), so ATTENTION_SPAN = 6 by FLOP
count. `auto` packs a batch when its packed rows cost less than its length groups. Measured
(2 threads, bf16 autocast, all-MiniLM-L6-v2 forward + backward, ~850 texts of 6-32 tokens,
mean 15.3, as a 64-user MovieLens batch; on a shared 2-core CPU, min of 3 steps):
length_buckets=4 computes 15925 positions (18.6% padding) at 24.8 s/step; see the
config field model.packing for the packed figures. Per-call timings on that CPU varied up
to 4x between repeats, too noisy to fit the span constant, so the FLOP ratio stands.
"""

from __future__ import annotations

import bisect
import inspect
from dataclasses import dataclass

import torch

# Attention over a w-token span costs as much as w / (ATTENTION_SPAN * H) of a token's linears
# (FLOP count; the module docstring says why it is not a CPU fit).
ATTENTION_SPAN = 6.0
PACKING_MODES = ("auto", "on", "off")
# Row capacity = PACK_FACTOR x model.max_text_tokens: every text fits, a row holds several
# texts, and the wider attention span stays a small share of the cost (module docstring).
PACK_FACTOR = 2


def pack_capacity(max_text_tokens: int) -> int:
    """Tokens per packed row for texts truncated to `max_text_tokens`."""
    return PACK_FACTOR * max_text_tokens


@dataclass(frozen=True)
class Packing:
    """How `encode_tokens` lays texts out: `mode` auto|on|off, the row capacity in tokens and
    the LM's hidden width for the auto rule (0 = read it from the LM)."""

    mode: str = "off"
    capacity: int = 0
    hidden: int = 0

    def __post_init__(self) -> None:
        if self.mode not in PACKING_MODES:
            raise ValueError(f"model.packing={self.mode!r}: expected one of {PACKING_MODES}")
        if self.mode != "off" and self.capacity < 1:
            raise ValueError(f"packing capacity={self.capacity}: must be >= 1 when packing")


@dataclass(frozen=True)
class PackedBatch:
    """Texts packed into rows. R rows of C = `capacity` slots; N texts.

    input_ids, position_ids, segments: [R, C]; `segments` holds the text index of each slot
    (-1 = row padding). starts, lengths: [N], `starts` the flat slot (row * C + offset) of
    each text's first token."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor

    @property
    def rows(self) -> int:
        """R, the number of packed rows."""
        return self.input_ids.shape[0]

    @property
    def capacity(self) -> int:
        """C, the tokens per row."""
        return self.input_ids.shape[1]


def length_groups(lengths: torch.Tensor, buckets: int) -> list[tuple[torch.Tensor, int]]:
    """(indices, width) of each group `encode_tokens` makes when it pads: texts sorted by length, split
    into `buckets` groups of near-equal count. An empty group (fewer texts than buckets) gets
    the longest text again, so the number of LM calls never depends on the data."""
    order = torch.argsort(lengths, stable=True)
    groups = []
    for group in torch.tensor_split(order, buckets):
        if group.numel() == 0:
            group = order[-1:]
        groups.append((group, max(1, int(lengths[group].max()))))
    return groups


def place(lengths: list[int], capacity: int) -> tuple[list[int], list[int], int]:
    """(row, offset) of every text and the row count: best-fit decreasing (longest text first,
    ties by index; each into the fullest row it still fits). Deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []  # sorted (room left, row)
    used: list[int] = []
    row, offset = [0] * len(lengths), [0] * len(lengths)
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k == len(free):
            r = len(used)
            used.append(0)
        else:
            r = free.pop(k)[1]
        row[i], offset[i] = r, used[r]
        used[r] += n
        if used[r] < capacity:
            bisect.insort(free, (capacity - used[r], r))
    return row, offset, len(used)


def text_lengths(attention_mask: torch.Tensor, capacity: int) -> torch.Tensor:
    """[N] real-token counts of right-padded texts; raises on left/inner padding, an empty
    text or one longer than `capacity`."""
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask of shape {tuple(attention_mask.shape)}: expected [N, W]")
    lengths = attention_mask.long().sum(1)
    width = attention_mask.shape[1]
    right = torch.arange(width, device=lengths.device) < lengths[:, None]
    if not torch.equal(attention_mask.bool(), right):
        raise ValueError("packing needs right-padded texts (attention_mask 1...1 0...0 per row)")
    if lengths.numel() and int(lengths.min()) < 1:
        raise ValueError(f"text {int(lengths.argmin())} has no tokens: nothing to pack")
    if lengths.numel() and int(lengths.max()) > capacity:
        raise ValueError(
            f"a text of {int(lengths.max())} tokens exceeds the packing capacity {capacity}; "
            f"raise the capacity or truncate texts (model.max_text_tokens)"
        )
    return lengths


def pack(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, capacity: int, min_rows: int = 1
) -> PackedBatch:
    """Pack right-padded texts ([N, W] ids and mask) into rows of `capacity` tokens (at least
    `min_rows` rows: all-padding rows are added to reach it)."""
    if input_ids.shape != attention_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} differ in shape"
        )
    lengths = text_lengths(attention_mask, capacity)
    row, offset, rows = place(lengths.tolist(), capacity)
    rows = max(rows, min_rows)
    device = input_ids.device
    starts = torch.tensor(row, device=device) * capacity + torch.tensor(offset, device=device)
    real = attention_mask.bool()
    text, pos = real.nonzero(as_tuple=True)
    slots = starts[text] + pos
    ids = input_ids.new_zeros(rows * capacity)
    positions = torch.zeros(rows * capacity, dtype=torch.long, device=device)
    segments = torch.full((rows * capacity,), -1, dtype=torch.long, device=device)
    ids[slots], positions[slots], segments[slots] = input_ids[real], pos, text
    shape = (rows, capacity)
    return PackedBatch(
        ids.view(shape), positions.view(shape), segments.view(shape), starts, lengths
    )


def block_mask(segments: torch.Tensor, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """[R, 1, C, C] additive mask: 0 where query and key share a segment (and, `causal`, the
    key is not later), finfo(dtype).min elsewhere. Row padding (-1) is one block of its own."""
    allowed = segments[:, :, None] == segments[:, None, :]
    if causal:
        width = segments.shape[1]
        allowed = (
            allowed & torch.ones(width, width, dtype=torch.bool, device=segments.device).tril()
        )
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def pool_packed(hidden: torch.Tensor, packed: PackedBatch, pooling: str) -> torch.Tensor:
    """[N, H] per-text pooling of packed states [R, C, H], in the texts' original order (at
    least in fp32, as `distrec.models.encoder.pool`)."""
    if hidden.dtype in (torch.bfloat16, torch.float16):
        hidden = hidden.float()
    flat = hidden.reshape(-1, hidden.shape[-1])
    if pooling == "cls":
        return flat[packed.starts]
    if pooling == "last":
        return flat[packed.starts + packed.lengths - 1]
    if pooling == "mean":
        seg = packed.segments.reshape(-1)
        real = (seg >= 0).nonzero(as_tuple=True)[0]
        sums = flat.new_zeros(packed.lengths.shape[0], flat.shape[-1])
        sums = sums.index_add(0, seg[real], flat[real])
        return sums / packed.lengths[:, None].to(flat.dtype)
    raise ValueError(f"model.pooling={pooling!r}: expected cls, mean or last")


def is_causal_lm(lm: torch.nn.Module) -> bool:
    """Whether the LM's self-attention is causal (decoder-only: Qwen2, Llama, BERT as decoder)."""
    if getattr(lm.config, "is_decoder", False):
        return True
    return any(getattr(m, "is_causal", False) is True for m in lm.modules())


def compute_dtype(lm: torch.nn.Module, device: torch.device) -> torch.dtype:
    """The dtype attention scores are computed in: autocast's when on, else the weights'."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return lm.get_input_embeddings().weight.dtype


def takes_token_types(lm: torch.nn.Module) -> bool:
    """Whether the LM's forward takes token_type_ids (BERT does, Qwen2 does not)."""
    return "token_type_ids" in inspect.signature(lm.forward).parameters


def encode_packed(
    lm: torch.nn.Module, packed: PackedBatch, pooling: str, calls: int = 1
) -> torch.Tensor:
    """[N, H] pooled LM states of `packed` texts, encoded in exactly `calls` LM calls (sharded
    backends need a data-independent call count): the rows split into `calls` near-equal
    chunks; pack with min_rows=calls so that none is empty."""
    if packed.rows < calls:
        raise ValueError(f"{packed.rows} packed rows for {calls} LM calls: pack(min_rows=calls)")
    causal = is_causal_lm(lm)
    dtype = compute_dtype(lm, packed.input_ids.device)
    types = takes_token_types(lm)
    hidden = []
    for chunk in torch.tensor_split(torch.arange(packed.rows), calls):
        rows = slice(int(chunk[0]), int(chunk[-1]) + 1)
        ids = packed.input_ids[rows]
        extra = {"token_type_ids": torch.zeros_like(ids)} if types else {}
        out = lm(
            input_ids=ids,
            attention_mask=block_mask(packed.segments[rows], causal, dtype),
            position_ids=packed.position_ids[rows],
            **extra,
        )
        hidden.append(out.last_hidden_state)
    return pool_packed(torch.cat(hidden), packed, pooling)


def encode_cost(shapes: list[tuple[int, int]], hidden: int) -> float:
    """Relative cost of LM calls over `shapes` (rows, width): rows * width token positions,
    each dearer by its attention span width / (ATTENTION_SPAN * hidden)."""
    return sum(rows * width * (1.0 + width / (ATTENTION_SPAN * hidden)) for rows, width in shapes)


def packed_rows(lengths: torch.Tensor, calls: int, how: Packing | None, hidden: int) -> int | None:
    """Rows `encode_tokens` packs texts of `lengths` into under `how`, or None when it pads
    them in `calls` length groups instead (mode off, or auto when packing does not pay)."""
    if how is None or how.mode == "off":
        return None
    _, _, rows = place(lengths.tolist(), how.capacity)
    rows = max(rows, calls)
    if how.mode == "on":
        return rows
    width = how.hidden or hidden
    if width < 1:
        raise ValueError("model.packing=auto needs the LM's hidden width: Packing(hidden=...)")
    groups = [(len(g), w) for g, w in length_groups(lengths, calls)]
    return rows if packing_pays(rows, how.capacity, groups, width) else None


def packing_pays(
    packed_rows: int, capacity: int, groups: list[tuple[int, int]], hidden: int
) -> bool:
    """`model.packing=auto`: pack when `packed_rows` rows of `capacity` cost less than the
    length groups' (count, width) shapes by `encode_cost`."""
    return encode_cost([(packed_rows, capacity)], hidden) < encode_cost(groups, hidden)

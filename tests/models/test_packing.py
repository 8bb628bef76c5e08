"""Packing: the packer's layout, and packed encoding equal to padded encoding (vectors and
LM gradients) for tiny random-init BERT and Qwen2, eager and SDPA attention."""

import pytest
import torch
from transformers import BertConfig, BertModel, Qwen2Config, Qwen2Model

from distrec.models import packing
from distrec.models.encoder import encode_tokens
from distrec.models.packing import (
    Packing,
    block_mask,
    encode_cost,
    pack,
    packing_pays,
    place,
)

WIDTH = 16
LENGTHS = [1, 5, 16, 3, 16, 2, 9, 1, 7, 12, 4]  # 1 and the maximum included
CAPACITY = 20


def tiny_lm(kind: str, attention: str) -> torch.nn.Module:
    """A random-init 2-layer, 2-head, 32-wide LM with no dropout."""
    torch.manual_seed(0)
    shape = dict(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
    )
    if kind == "bert":
        cfg = BertConfig(**shape, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        cls = BertModel
    else:
        cfg = Qwen2Config(**shape, num_key_value_heads=1, attention_dropout=0.0)
        cls = Qwen2Model
    cfg._attn_implementation = attention
    return cls(cfg).eval()


def texts(lengths: list[int] = LENGTHS, width: int = WIDTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random ids [N, width] (pad id 0) and their mask."""
    lengths_t = torch.tensor(lengths)
    mask = (torch.arange(width) < lengths_t[:, None]).long()
    ids = torch.randint(1, 100, mask.shape, generator=torch.Generator().manual_seed(1)) * mask
    return ids, mask


def vectors_and_grads(lm, ids, mask, pooling, how):
    """Pooled vectors and the LM's parameter gradients of a random linear functional of them."""
    lm.zero_grad()
    vec = encode_tokens(lm, ids, mask, pooling, 1, how)
    weights = torch.randn(vec.shape, generator=torch.Generator().manual_seed(2)).to(vec.dtype)
    (vec * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}
    return vec.detach(), grads


def test_packer_places_every_real_token_exactly_once_within_capacity():
    ids, mask = texts()
    ids = torch.arange(1, ids.numel() + 1).view(ids.shape) * mask  # every token unique
    packed = pack(ids, mask, CAPACITY)
    real = packed.segments >= 0
    assert sorted(packed.input_ids[real].tolist()) == sorted(ids[mask.bool()].tolist())
    assert (packed.input_ids[~real] == 0).all()
    assert packed.capacity == CAPACITY and real.sum(1).max() <= CAPACITY
    # Best-fit decreasing: 76 tokens in rows of 20 -> 4 rows, the lower bound.
    assert packed.rows == 4
    for i, n in enumerate(LENGTHS):
        flat = packed.segments.view(-1)
        slots = (flat == i).nonzero().view(-1)
        assert slots.tolist() == list(range(int(packed.starts[i]), int(packed.starts[i]) + n))
        assert packed.position_ids.view(-1)[slots].tolist() == list(range(n))
        assert packed.input_ids.view(-1)[slots].tolist() == ids[i, :n].tolist()
    again = pack(ids, mask, CAPACITY)
    assert torch.equal(again.input_ids, packed.input_ids)  # deterministic


def test_place_adds_rows_only_when_no_row_has_room():
    row, offset, rows = place([3, 3, 3, 1], 4)
    assert rows == 3 and row == [0, 1, 2, 0] and offset == [0, 0, 0, 3]
    assert pack(*texts([2, 2]), 8, min_rows=3).rows == 3


@pytest.mark.parametrize(
    ("lengths", "capacity", "match"),
    [([3, 0], 8, "has no tokens"), ([3, 9], 8, "exceeds the packing capacity 8")],
)
def test_packer_fails_loudly_on_bad_texts(lengths, capacity, match):
    ids, mask = texts(lengths, 10)
    with pytest.raises(ValueError, match=match):
        pack(ids, mask, capacity)


def test_packer_refuses_left_padding_and_unknown_modes():
    ids, mask = texts([2, 3], 4)
    with pytest.raises(ValueError, match="right-padded"):
        pack(ids, mask.flip(1), 8)
    with pytest.raises(ValueError, match="differ in shape"):
        pack(ids[:, :3], mask, 8)
    with pytest.raises(ValueError, match=r"model\.packing='always'"):
        Packing("always", 8)


def test_block_mask_is_block_diagonal_and_causal_for_decoders():
    segments = torch.tensor([[0, 0, 1, -1]])
    allowed = block_mask(segments, causal=False, dtype=torch.float32)[0, 0] == 0
    assert allowed.tolist() == [
        [True, True, False, False],
        [True, True, False, False],
        [False, False, True, False],
        [False, False, False, True],
    ]
    causal = block_mask(segments, causal=True, dtype=torch.bfloat16)[0, 0]
    assert causal.dtype == torch.bfloat16 and causal[0, 1] == torch.finfo(torch.bfloat16).min
    assert (causal == 0).tolist()[1] == [True, True, False, False]


@pytest.mark.parametrize(
    ("kind", "attention", "pooling"),
    [
        ("bert", "sdpa", "mean"),
        ("bert", "sdpa", "cls"),
        ("bert", "eager", "mean"),
        ("qwen2", "sdpa", "mean"),
        ("qwen2", "sdpa", "last"),
        ("qwen2", "eager", "last"),
    ],
)
def test_packed_encoding_equals_padded_encoding(kind, attention, pooling):
    lm = tiny_lm(kind, attention)
    ids, mask = texts()
    padded, g_padded = vectors_and_grads(lm, ids, mask, pooling, None)
    packed, g_packed = vectors_and_grads(lm, ids, mask, pooling, Packing("on", CAPACITY))
    assert torch.isfinite(packed).all()
    assert (packed - padded).abs().max() < 1e-5
    assert g_packed.keys() == g_padded.keys()
    for name, grad in g_padded.items():
        # fp32 sums of up to 76 tokens in another order: 1e-5 of the gradient's own scale.
        scale = max(1.0, float(grad.abs().max()))
        assert (g_packed[name] - grad).abs().max() <= 1e-5 * scale, name


@pytest.mark.parametrize(("kind", "pooling"), [("bert", "mean"), ("qwen2", "last")])
def test_a_leaking_mask_changes_the_vectors(kind, pooling, monkeypatch):
    """The equality above is not vacuous: attention across texts in a row is visible."""
    lm = tiny_lm(kind, "sdpa")
    ids, mask = texts()
    padded = vectors_and_grads(lm, ids, mask, pooling, None)[0]
    monkeypatch.setattr(
        packing,
        "block_mask",
        lambda s, causal, dtype: block_mask(torch.zeros_like(s), causal, dtype),
    )
    leaked = vectors_and_grads(lm, ids, mask, pooling, Packing("on", CAPACITY))[0]
    assert (leaked - padded).abs().max() > 1e-3


def test_a_decoder_packed_without_causality_differs():
    lm = tiny_lm("qwen2", "sdpa")
    ids, mask = texts()
    padded = vectors_and_grads(lm, ids, mask, "mean", None)[0]
    lm.config.is_decoder = False  # is_causal_lm also reads the attention modules
    for module in lm.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
    bidirectional = vectors_and_grads(lm, ids, mask, "mean", Packing("on", CAPACITY))[0]
    assert (bidirectional - padded).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["on", "auto"])
def test_packing_keeps_the_lm_call_count_at_length_buckets(mode):
    lm = tiny_lm("bert", "sdpa")
    calls = []
    lm.register_forward_hook(lambda m, args, out: calls.append(1))
    ids, mask = texts([2, 3])
    out = encode_tokens(lm, ids, mask, "cls", 4, Packing(mode, 8))
    assert len(calls) == 4 and out.shape == (2, 32)


def test_auto_packs_only_when_it_pays():
    # 64 texts of 3 to 10 tokens in groups padded to 10: 640 positions; packed, 20 rows of 20.
    assert packing_pays(20, 20, [(16, 10)] * 4, hidden=32)
    # Texts of 11 tokens: one per row of 20, nearly twice the positions.
    assert not packing_pays(64, 20, [(16, 11)] * 4, hidden=32)
    assert encode_cost([(2, 10)], hidden=10) == pytest.approx(20 * (1 + 1 / packing.ATTENTION_SPAN))


@pytest.mark.parametrize("kind", ["bert", "qwen2"])
def test_packed_gradients_equal_padded_gradients_absolutely_in_fp64(kind):
    """In fp64 the reordered sums vanish: gradients agree to 1e-5 absolutely (~1e-13 seen)."""
    lm = tiny_lm(kind, "sdpa").double()
    ids, mask = texts()
    padded, g_padded = vectors_and_grads(lm, ids, mask, "mean", None)
    packed, g_packed = vectors_and_grads(lm, ids, mask, "mean", Packing("on", CAPACITY))
    assert (packed - padded).abs().max() < 1e-10
    assert max(float((g_packed[n] - g).abs().max()) for n, g in g_padded.items()) < 1e-5

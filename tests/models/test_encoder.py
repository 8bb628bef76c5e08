"""Item encoders: the real all-MiniLM-L6-v2 and tiny random-init Qwen2 / Llama checkpoints."""

import pytest
import torch
from transformers import LlamaConfig, LlamaModel, Qwen2Config, Qwen2Model

from distrec.config import ConfigError
from distrec.models.encoder import (
    default_lm_targets,
    dropout_overrides,
    encode_tokens,
    length_groups,
    load_encoder,
    pool,
    resolve_model_path,
)


def test_pooling_rules():
    hidden = torch.arange(12, dtype=torch.float32).view(1, 3, 4).repeat(2, 1, 1)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "cls")[0].tolist() == [0, 1, 2, 3]
    assert pool(hidden, mask, "mean")[0].tolist() == [2, 3, 4, 5]
    assert pool(hidden, mask, "last")[0].tolist() == [4, 5, 6, 7]
    assert pool(hidden, mask, "last")[1].tolist() == [8, 9, 10, 11]


def test_embedded_minilm_loads_offline_and_embeds_meaningfully():
    lm, tok = load_encoder("embedded:all-MiniLM-L6-v2")
    assert lm.config.hidden_size == 384
    batch = tok(
        [
            "Toy Story (1995). Genres: Animation Children's Comedy",
            "Toy Story 2 (1999). Genres: Animation Children's Comedy",
            "Schindler's List (1993). Genres: Drama War",
        ],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        v = torch.nn.functional.normalize(
            encode_tokens(lm, batch["input_ids"], batch["attention_mask"], "mean"), dim=-1
        )
    assert (v[0] @ v[1]) > (v[0] @ v[2]) + 0.1
    assert default_lm_targets(lm) == ["query", "key", "value", "dense"]


@pytest.mark.parametrize(
    ("config_cls", "model_cls"), [(Qwen2Config, Qwen2Model), (LlamaConfig, LlamaModel)]
)
def test_tiny_decoders_load_from_a_local_folder(tmp_path, config_cls, model_cls):
    cfg = config_cls(
        vocab_size=384,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model_cls(cfg).save_pretrained(tmp_path / "lm")
    _, tok = load_encoder("embedded:all-MiniLM-L6-v2")
    tok.save_pretrained(tmp_path / "lm")  # any tokenizer whose ids fit the vocab
    lm, tok2 = load_encoder(str(tmp_path / "lm"))
    ids = tok2(["a movie"], return_tensors="pt")
    out = encode_tokens(lm, ids["input_ids"].clamp_max(383), ids["attention_mask"], "last")
    assert out.shape == (1, 32) and torch.isfinite(out).all()
    assert default_lm_targets(lm)[:3] == ["q_proj", "k_proj", "v_proj"]


def test_missing_model_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError, match=r"could not load a checkpoint \(looked in .*nowhere"):
        load_encoder(str(tmp_path / "nowhere"))


def test_unknown_embedded_model():
    with pytest.raises(ConfigError, match="embedded models are"):
        resolve_model_path("embedded:gpt-17")


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_length_groups_give_the_same_vectors_and_gradients_as_one_padded_call(pooling):
    lm, tok = load_encoder("embedded:all-MiniLM-L6-v2")
    lm.eval()  # no dropout: the two paths must be comparable
    texts = ["Heat (1995)", "A", "Toy Story (1995). Genres: Animation Children's Comedy"] * 3
    batch = tok(texts[:-1], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    results = []
    for buckets in (1, 4):
        lm.zero_grad()
        vec = encode_tokens(lm, ids, mask, pooling, buckets)
        vec.pow(2).sum().backward()
        results.append((vec.detach(), lm.embeddings.word_embeddings.weight.grad.clone()))
    (one, g_one), (grouped, g_grouped) = results
    assert torch.allclose(one, grouped, atol=1e-5)
    assert torch.allclose(g_one, g_grouped, rtol=1e-4, atol=1e-5 * float(g_one.abs().max()))


def test_length_groups_keep_the_call_count_when_texts_are_fewer_than_buckets():
    lengths = torch.tensor([5, 2])
    groups = length_groups(lengths, 4)
    assert len(groups) == 4
    assert [g.tolist() for g, _ in groups[:2]] == [[1], [0]]
    assert [w for _, w in groups] == [2, 5, 5, 5]
    calls = []

    def lm(input_ids, attention_mask):
        calls.append(input_ids.shape)
        hidden = input_ids[..., None].float().expand(-1, -1, 3)
        return type("Out", (), {"last_hidden_state": hidden})()

    ids = torch.tensor([[7, 8, 9, 1, 1], [3, 4, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    out = encode_tokens(lm, ids, mask, "cls", 4)
    assert len(calls) == 4 and calls[0] == (1, 2)
    assert out[:, 0].tolist() == [7.0, 3.0]


def test_lm_dropout_replaces_every_dropout_of_the_checkpoint():
    lm, _ = load_encoder("embedded:all-MiniLM-L6-v2")
    assert lm.config.hidden_dropout_prob == 0.1  # the checkpoint's own
    lm, _ = load_encoder("embedded:all-MiniLM-L6-v2", dropout=0.0)
    assert lm.config.hidden_dropout_prob == lm.config.attention_probs_dropout_prob == 0.0
    rates = {m.p for m in lm.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates <= {0.0}
    assert dropout_overrides(Qwen2Config(), 0.2) == {"attention_dropout": 0.2}


def test_attention_auto_is_eager_for_cpu_training_only_and_matches_sdpa():
    import torch

    from distrec.models.encoder import attention_for, encode_tokens

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert attention_for("auto", "end_to_end", cpu) == "eager"
    assert attention_for("auto", "cached", cpu) == "sdpa"
    assert attention_for("auto", "end_to_end", gpu) == "sdpa"
    assert attention_for("sdpa", "end_to_end", cpu) == "sdpa"
    eager, tok = load_encoder("embedded:all-MiniLM-L6-v2", dropout=0.0, attention="eager")
    sdpa, _ = load_encoder("embedded:all-MiniLM-L6-v2", dropout=0.0, attention="sdpa")
    assert eager.config._attn_implementation == "eager"
    assert sdpa.config._attn_implementation == "sdpa"
    batch = tok(
        ["Toy Story (1995)", "Heat (1995). Genres: Action Crime Thriller"],
        padding=True,
        return_tensors="pt",
    )
    a = encode_tokens(eager, batch["input_ids"], batch["attention_mask"], "mean")
    b = encode_tokens(sdpa, batch["input_ids"], batch["attention_mask"], "mean")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

"""Item encoders: the real all-MiniLM-L6-v2 and tiny random-init Qwen2 / Llama checkpoints."""

import pytest
import torch
from transformers import LlamaConfig, LlamaModel, Qwen2Config, Qwen2Model

from distrec.config import ConfigError
from distrec.models.encoder import (
    default_lm_targets,
    encode_tokens,
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

import torch

from distrec.data.collate import collate_sequences
from distrec.data.tokens import AttachTokens, TokenTable


class WordTokenizer:
    """A stand-in tokenizer: one id per word, padded to max_length."""

    pad_token_id = 0

    def __len__(self) -> int:
        return 100

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        ids = torch.zeros(len(texts), max_length, dtype=torch.long)
        mask = torch.zeros(len(texts), max_length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = [len(w) + 1 for w in text.split()][:max_length]
            ids[row, : len(words)] = (
                torch.tensor(words, dtype=torch.long) if words else ids[row, :0]
            )
            mask[row, : len(words)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def test_token_table_is_cached_per_catalog_and_batches_encode_each_item_once(tmp_path):
    texts = ["a bb", "ccc", "dd ee fff gggg"]
    table = TokenTable.build(WordTokenizer(), texts, 4, tmp_path, "word", "sha-1")
    assert table.input_ids.shape == (4, 4) and table.lengths.tolist() == [0, 2, 1, 4]
    assert len(list((tmp_path / "tokens").glob("*.safetensors"))) == 1
    again = TokenTable.build(WordTokenizer(), texts, 4, tmp_path, "word", "sha-1")
    assert torch.equal(again.input_ids, table.input_ids)
    TokenTable.build(WordTokenizer(), texts, 4, tmp_path, "word", "sha-2")  # another catalog
    assert len(list((tmp_path / "tokens").glob("*.safetensors"))) == 2

    batch = collate_sequences(
        [{"index": 0, "items": [1, 3, 1, 3]}, {"index": 1, "items": [3, 2]}], 8
    )
    out = AttachTokens(table, pad_id=0)(batch)
    assert out["items"].tolist() == [1, 2, 3]  # deduplicated
    assert out["input_ids"].shape == (3, 4)  # trimmed to the longest item in the batch
    assert out["attention_mask"].sum(1).tolist() == [2, 1, 4]
    # local indices point into [pad] + items
    assert out["inputs_local"][0].tolist() == [1, 3, 1]
    assert out["targets_local"][1].tolist() == [2, 0, 0]

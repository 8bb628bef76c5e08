"""Data: fetch embedded datasets, import logs, prepare WebDataset shards, stream them."""

"""Data: dataset formats and embedded datasets (registries), import, prepare WebDataset
shards + manifest, synth, inspect, and the resumable stream and its loaders."""

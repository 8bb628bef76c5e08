"""The stages of a run: pretrain -> zero_shot -> adapt, the baselines on the same split,
then any registered stage named in stages.extra (registry.py says how to add one)."""

"""Training: stages (pretrain -> zero-shot -> adapt, baselines), the loop, outputs."""

"""Training: the Workspace a run shares, the Trainer (typed state, hooks), evaluation,
losses (registry), PEFT adapters, the stages (registry; pretrain -> zero-shot -> adapt,
baselines, extras), and what a run writes (outputs)."""

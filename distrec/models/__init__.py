"""Single-device model code: item tower, user tower, the two-tower recommender, PEFT adapters."""

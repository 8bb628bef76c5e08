"""Single-device model code: typed I/O (io), towers, the two-tower recommender, the
architecture registry, the LM loader (encoder) and cached LM item features (features)."""

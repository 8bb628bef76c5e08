"""Full-ranking leave-one-out evaluation (DESIGN section 5)."""

"""Full-ranking leave-one-out evaluation: ranks with a tie rule, Recall/NDCG/MRR, sharded
evaluation and bootstrap intervals (protocol: README "Quality: how the results table is made")."""

"""Analyses of the paper as tools: why distance to data works (Fig. 1, Prop. 2, score checks, …)."""

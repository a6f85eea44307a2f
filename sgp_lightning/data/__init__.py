"""Offline datasets: behaviour policies, rollouts in D4RL layout, the collector."""

"""Env tests, and a domain defined only under tests/ (double_integrator_domain/) that trains and plans."""

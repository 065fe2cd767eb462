"""Prototype scoring for trait discovery: scorers, an exact AP engine, the seed-004 protocol and its table.

Modules import torch; job modules import them inside `run`.
"""

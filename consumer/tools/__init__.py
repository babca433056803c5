"""Subcommands and helpers that are not on the `run` path: evaluate, jsonout, demo,
synthetic, publish, downstream.
"""

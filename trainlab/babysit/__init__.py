"""Babysitting the learning process (SPEC §4): sanity checks, LR range test, monitors, diagnosis."""

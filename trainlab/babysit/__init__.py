"""Babysitting the learning process (docs/design.md §4): sanity checks, LR range test, monitors, diagnosis."""

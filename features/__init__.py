"""Shared vocabulary of all stages: the HDF5 feature store, Aff-Wild2 labels, tasks and metrics.

This package imports no other stage (extract, classify and postprocess import it).
"""

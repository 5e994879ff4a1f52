"""Datasets: text corpora and generated task data."""

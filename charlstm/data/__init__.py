"""Corpora for the character models: text8 and plain text, normalised to text8 form, and batching."""

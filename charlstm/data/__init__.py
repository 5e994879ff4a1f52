"""Data: the one corpus reader (corpus.py) and its downloads, the text8 form of a corpus and the
assignment's batches, a model's vocabulary, and the generated strings of the calculator tasks."""

"""Data: corpora for the character models (text8 and plain text, normalised to text8 form, and
batching), speech corpora kept as written, and the generated strings of the calculator tasks."""

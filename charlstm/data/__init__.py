"""Corpora: downloads, speeches and other plain-text collections."""

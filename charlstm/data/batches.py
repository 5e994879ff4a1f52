"""Token ids for the 27 characters, and the assignment's BatchGenerator on them.

The assignment (Udacity deep learning, 6_lstm) maps ' ' to 0 and 'a'..'z' to 1..26, and feeds
one-hot vectors; here batches are int64 ids that the models gather from, which is the same thing.
"""

import numpy as np
import torch

from charlstm.data.normalize import TEXT8_ALPHABET

VOCAB_SIZE = len(TEXT8_ALPHABET)

_IDS = np.zeros(256, dtype=np.uint8)  # any other byte maps to 0, the space, as char2id does
_IDS[np.frombuffer(TEXT8_ALPHABET, dtype=np.uint8)] = np.arange(VOCAB_SIZE, dtype=np.uint8)


def encode(text: bytes) -> np.ndarray:
    """uint8 ids of a text in text8 form."""
    return _IDS[np.frombuffer(text, dtype=np.uint8)]


class BatchGenerator:
    """The assignment's BatchGenerator, vectorised, returning int64 ids [unrollings + 1, batch].

    Row b reads the text from cursor b, the cursors start `len(ids) // batch_size` apart, and
    every window begins with the previous window's last character followed by `unrollings` new
    ones; cursors wrap around the end of the text. The assignment keeps that last character as
    `_last_batch`; it is always the one just before each cursor, so the cursors are the whole state.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, unrollings: int):
        if len(ids) < batch_size:
            raise ValueError(f"text of {len(ids)} characters is shorter than one batch of {batch_size}")
        self.ids = ids
        self.batch_size = batch_size
        self.unrollings = unrollings
        segment = len(ids) // batch_size
        # The assignment's constructor already reads the first character of each row.
        self.cursors = (np.arange(batch_size, dtype=np.int64) * segment + 1) % len(ids)
        self._offsets = np.arange(-1, unrollings, dtype=np.int64)[:, None]

    def next(self) -> torch.Tensor:
        window = self.ids[(self.cursors[None, :] + self._offsets) % len(self.ids)]
        self.cursors = (self.cursors + self.unrollings) % len(self.ids)
        return torch.from_numpy(window.astype(np.int64))

    def state_dict(self) -> dict:
        return {"cursors": torch.from_numpy(self.cursors.copy())}

    def load_state_dict(self, state: dict) -> None:
        cursors = state["cursors"].numpy().astype(np.int64)
        if cursors.shape != (self.batch_size,):
            raise ValueError(f"saved cursors have shape {tuple(cursors.shape)}, expected "
                             f"({self.batch_size},): the checkpoint is from another batch size")
        self.cursors = cursors.copy()

import string

import numpy as np
import pytest
import torch

from charlstm.data.batches import VOCAB_SIZE, BatchGenerator, encode


def char2id(char):
    if char in string.ascii_lowercase:
        return ord(char) - ord("a") + 1
    return 0


class AssignmentBatchGenerator:
    """The assignment's generator as written there, one-hot batches and all."""

    def __init__(self, text, batch_size, num_unrollings):
        self._text = text
        self._text_size = len(text)
        self._batch_size = batch_size
        self._num_unrollings = num_unrollings
        segment = self._text_size // batch_size
        self._cursor = [offset * segment for offset in range(batch_size)]
        self._last_batch = self._next_batch()

    def _next_batch(self):
        batch = np.zeros(shape=(self._batch_size, VOCAB_SIZE), dtype=np.float32)
        for b in range(self._batch_size):
            batch[b, char2id(self._text[self._cursor[b]])] = 1.0
            self._cursor[b] = (self._cursor[b] + 1) % self._text_size
        return batch

    def next(self):
        batches = [self._last_batch]
        for step in range(self._num_unrollings):
            batches.append(self._next_batch())
        self._last_batch = batches[-1]
        return batches


def random_text(n, seed=0):
    rng = np.random.default_rng(seed)
    return bytes(rng.choice(list(b" abcdefghijklmnopqrstuvwxyz"), size=n)).decode()


def test_encode_is_the_assignments_char2id():
    assert encode(b" az").tolist() == [0, 1, 26]
    text = random_text(200)
    assert [char2id(c) for c in text] == encode(text.encode()).tolist()


@pytest.mark.parametrize("n, batch, unrollings", [(103, 4, 5), (64, 7, 10), (50, 1, 1), (37, 5, 13), (12, 12, 3)])
def test_matches_the_assignment(n, batch, unrollings):
    text = random_text(n, seed=n)
    ours = BatchGenerator(encode(text.encode()), batch, unrollings)
    theirs = AssignmentBatchGenerator(text, batch, unrollings)
    for _ in range(3 * n // unrollings + 2):  # several wraps around the text
        window = ours.next()
        assert window.dtype == torch.int64 and window.shape == (unrollings + 1, batch)
        expected = np.stack([b.argmax(1) for b in theirs.next()])
        assert window.numpy().tolist() == expected.tolist()


def test_state_dict_resumes_the_sequence():
    ids = encode(random_text(500).encode())
    a = BatchGenerator(ids, 8, 10)
    for _ in range(7):
        a.next()
    b = BatchGenerator(ids, 8, 10)
    b.load_state_dict(a.state_dict())
    for _ in range(10):
        assert torch.equal(a.next(), b.next())
    with pytest.raises(ValueError, match="another batch size"):
        BatchGenerator(ids, 4, 10).load_state_dict(a.state_dict())


def test_text_shorter_than_a_batch():
    with pytest.raises(ValueError, match="shorter than one batch"):
        BatchGenerator(encode(b"abc"), 4, 2)

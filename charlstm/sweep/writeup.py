"""The write-up that the `udacity` preset reproduces, as data: its hypotheses and questions in its
own words, the author's verdicts, and the single runs it reports.

"Understanding LSTM Model Parameters" (SOURCE below): the Udacity deep-learning assignment
6_lstm's model trained on text8 with TensorFlow, validation perplexity on the first 1000
characters. Its curves are published as images only; the single runs below are the numbers
it states. What this repository computes about each statement lives in charlstm.sweep.verdicts.
"""

from dataclasses import dataclass

TITLE = "Understanding LSTM Model Parameters"
SOURCE = "https://zduey.github.io/snippets/lstm-parameter-exploration/"
# The write-up validates on the first 1000 characters of text8, as the assignment does.
VALID_SIZE = 1000


@dataclass(frozen=True)
class Statement:
    key: str          # H1..H4, Q1..Q3
    quote: str        # the write-up's words
    author: str       # the author's verdict or answer, in short


HYPOTHESES = (
    Statement("H1", "Increasing the number of unrollings will reduce the validation set "
                    "perplexity ceteris paribus.",
              "correct, but the effect diminishes after about 15 unrollings"),
    Statement("H2", "Increasing num_nodes/batch_size will not reduce the validation set "
                    "perplexity ceteris paribus.",
              "incorrect: both reduce it, levelling off around batch size 64 and 128 nodes"),
    Statement("H3", "Increasing the number of epochs will reduce the perplexity.",
              "correct, though not monotonically (its epochs are training steps)"),
    Statement("H4", "The number of nodes must be equal to the batch size.", "incorrect"),
)
QUESTIONS = (
    Statement("Q1", "How is the validation set perplexity affected by jointly changing "
                    "num_nodes and num_unrollings?",
              "a \"ski slope\": perplexity falls as both grow"),
    Statement("Q2", "Can you have more unrollings than nodes? What happens?",
              "yes; more unrollings still lower perplexity, and the nodes matter most"),
    Statement("Q3", "Can you have more unrollings than epochs? What happens?",
              "yes; unclear whether it differs from 1 unrolling beyond noise"),
)
# Where the author saw the gains level off (H1, H2), to set beside ours.
AUTHOR_LEVEL_OFF = {"unrollings": 15, "batch_size": 64, "nodes": 128}


@dataclass(frozen=True)
class Run:
    """One training the write-up reports, with the validation perplexity it got."""

    batch_size: int
    nodes: int
    unrollings: int
    steps: int
    perplexity: float

    def params(self) -> dict:
        return {"batch_size": self.batch_size, "nodes": self.nodes,
                "unrollings": self.unrollings, "steps": self.steps}


RUNS = (
    Run(64, 64, 10, 3001, 4.675),
    Run(32, 64, 10, 3001, 4.913),
    Run(64, 32, 10, 3001, 5.748),
    Run(64, 64, 100, 65, 11.478),
    Run(64, 64, 1, 65, 13.857),
    Run(64, 12, 15, 3001, 7.328),
)

"""corpus_lens: measure, filter and reweight how AI is depicted in a pretraining corpus."""

__version__ = "0.1.0"

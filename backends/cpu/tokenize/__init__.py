"""The Numba tokenizers, one module per module of :mod:`spec.tokenize`, with the spec's
signatures and results: ``pretokenize`` (:func:`split_utf8`, the pre-tokenizer as byte
offsets), ``bpe`` (training and encoding) and ``swe`` (segmentation, SWE growth, unigram
pruning)."""

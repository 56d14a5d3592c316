"""Softmax attention: the oracle (naive), FlashAttention (tiled), shared input checks."""

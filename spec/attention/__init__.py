"""Softmax attention: the oracle (naive), FlashAttention (tiled), packed sequences (varlen),
positional options (positional), block-sparse tiles (block_sparse) and PrFlashAttention
(prflash), with the input checks they share (checks)."""

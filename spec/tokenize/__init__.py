"""Sub-word tokenization: the GPT-2 pre-tokenizer, byte-level BPE and the likelihood-optimal
sub-word encoding (SWE) with its unigram-LM pruning variant."""

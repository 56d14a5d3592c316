"""Our Viterbi loaded with a sentencepiece unigram model's pieces and scores gives
sentencepiece's segmentation (EncodeAsPieces) on held-out text.

Normalisation mirrored (UnigramModel(boundary="start", sep=" ")):
* normalization_rule_name="identity": no NFKC, tabs/newlines are ordinary characters;
* remove_extra_whitespaces (default on): leading/trailing spaces dropped, runs of
  U+0020 collapsed -> our words are text.split(" ") without empty strings;
* add_dummy_prefix + escaped spaces: every word starts with "▁" (U+2581);
* no piece holds "▁" after its first character (split_by_whitespace), so the
  sentence lattice splits into independent word lattices;
* byte_fallback off; character_coverage=1.0 and held-out lines restricted to characters
  the model has, so no unknown pieces occur (sentencepiece merges runs of unknowns);
* control pieces (<unk>, <s>, </s>) are not loaded.
Tie difference: sentencepiece sums float32 scores over the whole sentence; we sum
float64 per word, ties to the smallest start. Exact ties (e.g. "=" + "======" against
"======" + "=") are then broken by float32 rounding on its side: the test checks that
every differing line is such a tie (both paths score the same in float64).
"""

from __future__ import annotations

import io
import sysconfig
from pathlib import Path

import pytest

from spec.tokenize import swe

spm = pytest.importorskip("sentencepiece")


def _lines(names, limit):
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for name in names:
        out += [ln for ln in (root / name).read_text(encoding="utf-8").splitlines() if ln.strip()]
    return out[:limit]


def test_viterbi_matches_sentencepiece_unigram():
    train_lines = _lines(["argparse.py", "textwrap.py", "inspect.py", "typing.py"], 8000)
    held = _lines(["dataclasses.py", "shutil.py"], 1500)
    f = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train_lines), model_writer=f, vocab_size=800, model_type="unigram",
        normalization_rule_name="identity", character_coverage=1.0, byte_fallback=False,
        num_threads=1, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=f.getvalue())
    model = swe.UnigramModel.from_sentencepiece(sp)
    chars = {c for s in model.pieces for c in s}
    held = [ln for ln in held if set(ln.replace(" ", "")) <= chars]
    assert len(held) > 1000
    mismatches = [ln for ln in held if model.segment(ln) != sp.encode_as_pieces(ln)]
    # Every difference is a tie in float64: sentencepiece's path scores the same under
    # our sums, so only the tie-break differs (its float32 sentence-long running sum
    # rounds "a"+"b" and "b"+"a" differently; we keep the smallest i).
    for ln in mismatches:
        ours, theirs = model.segment(ln), sp.encode_as_pieces(ln)
        score = sum(model.segment_word(w)[1] for w in model.words(ln))
        their_score = 0.0
        for piece in theirs:
            their_score += model.log_prob[piece]
        our_score = 0.0
        for piece in ours:
            our_score += model.log_prob[piece]
        assert their_score == our_score == pytest.approx(score, rel=1e-12), ln
    assert len(mismatches) <= len(held) // 20

"""`attnspec tokenize train|encode|decode` end to end, its errors, the progress bar and the corpora."""

from __future__ import annotations

import io
import json

import pytest

from backends import cli, corpus
from backends.progress import ProgressBar

TEXT = (
    "The quick brown fox jumps over the lazy dog.\n"
    "  Indented line with  two spaces\r\n"
    "naïve café, emoji 🦊🦊 and combining e\u0301 marks\n"
    "\n"
    "numbers 12345 and 3.14159; the the the end"
)


def _run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def files(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text((TEXT + "\n") * 3 + corpus.stdlib_text(20_000), encoding="utf-8", newline="")
    sample = tmp_path / "sample.txt"
    sample.write_text(TEXT, encoding="utf-8", newline="")
    return train, sample


@pytest.mark.parametrize("backend", ["spec", "cpu"])
@pytest.mark.parametrize("as_json", [False, True])
def test_bpe_train_encode_decode_round_trip(tmp_path, files, capsys, backend, as_json):
    train, sample = files
    model = tmp_path / "model.json"
    status, _, err = _run(capsys, "tokenize", "train", "--kind", "bpe", "--vocab-size", 300,
                          "--backend", backend, "--special", "<|endoftext|>", train, "-o", model)
    assert status == 0, err
    ids_file = tmp_path / "ids.txt"
    extra = ["--json"] if as_json else []
    status, _, err = _run(capsys, "tokenize", "encode", "-m", model, sample, "-o", ids_file, *extra)
    assert status == 0, err
    text = ids_file.read_text()
    if as_json:
        assert isinstance(json.loads(text), list)
    else:  # one line of ids per input line
        assert len(text.splitlines()) == len(TEXT.splitlines())
    status, out, err = _run(capsys, "tokenize", "decode", "-m", model, ids_file)
    assert status == 0, err
    assert out == TEXT
    # ids to stdout, decoded to a file
    status, out, _ = _run(capsys, "tokenize", "encode", "-m", model, sample)
    assert status == 0 and out == ids_file.read_text() or as_json


def test_encode_of_a_special_token_is_one_id(tmp_path, files, capsys):
    train, _ = files
    model = tmp_path / "m.json"
    assert _run(capsys, "tokenize", "train", "--vocab-size", 270, "--backend", "spec",
                "--special", "<|endoftext|>", train, "-o", model)[0] == 0
    src = tmp_path / "s.txt"
    src.write_text("a<|endoftext|>b")
    status, out, _ = _run(capsys, "tokenize", "encode", "-m", model, src, "--json")
    assert status == 0
    assert 269 in json.loads(out)  # 256 bytes, 13 merges, then the special token


@pytest.mark.parametrize("kind", ["swe", "unigram"])
def test_unigram_kinds_round_trip(tmp_path, files, capsys, kind):
    """swe and unigram models normalise whitespace: a text with single spaces and no
    leading or trailing blanks on its lines round-trips exactly in the line form."""
    pytest.importorskip("spec.tokenize.swe")
    train, _ = files
    sample = tmp_path / "words.txt"
    text = "".join(" ".join(line.split()) + "\n" for line in TEXT.splitlines())
    sample.write_text(text, encoding="utf-8", newline="")
    small = tmp_path / "small.txt"
    small.write_text(train.read_text()[:6000])
    model = tmp_path / "u.json"
    status, _, err = _run(capsys, "tokenize", "train", "--kind", kind, "--vocab-size", 200,
                          "--backend", "spec", small, "-o", model)
    if status != 0 and "no swe trainer" in err:
        pytest.skip(err)
    assert status == 0, err
    ids = tmp_path / "ids.txt"
    assert _run(capsys, "tokenize", "encode", "-m", model, sample, "-o", ids)[0] == 0
    status, out, err = _run(capsys, "tokenize", "decode", "-m", model, ids)
    assert status == 0, err
    assert out == text


def test_errors_exit_2_with_a_message_and_no_traceback(tmp_path, files, capsys):
    train, sample = files
    status, _, err = _run(capsys, "tokenize", "train", "--vocab-size", 300, tmp_path / "nope.txt",
                          "-o", tmp_path / "m.json")
    assert status == 2 and "no such file" in err and "Traceback" not in err
    status, _, err = _run(capsys, "tokenize", "encode", "-m", tmp_path / "missing.json", sample)
    assert status == 2 and "no such model file" in err
    bad = tmp_path / "bad.json"
    for content in ("not json at all", '{"merges": "nonsense"}', "[1, 2, 3]", '{"format": "attnspec-unigram"}'):
        bad.write_text(content)
        status, _, err = _run(capsys, "tokenize", "encode", "-m", bad, sample)
        assert status == 2 and str(bad) in err and "Traceback" not in err, (content, err)
    binary = tmp_path / "latin1.txt"
    binary.write_bytes(b"caf\xe9\n")
    status, _, err = _run(capsys, "tokenize", "train", "--vocab-size", 300, "--backend", "spec",
                          binary, "-o", tmp_path / "m.json")
    assert status == 2 and "not UTF-8" in err
    status, _, err = _run(capsys, "tokenize", "train", "--vocab-size", 100, "--backend", "spec",
                          train, "-o", tmp_path / "m.json")
    assert status == 2 and "training failed" in err  # below the 256 byte ids


def test_decode_rejects_ids_outside_the_vocabulary(tmp_path, files, capsys):
    train, _ = files
    model = tmp_path / "m.json"
    assert _run(capsys, "tokenize", "train", "--vocab-size", 260, "--backend", "spec", train, "-o", model)[0] == 0
    ids = tmp_path / "ids.txt"
    for content in ("1 2 99999\n", "1 two 3\n", "[1, 2.5]"):
        ids.write_text(content)
        status, _, err = _run(capsys, "tokenize", "decode", "-m", model, ids)
        assert status == 2 and "Traceback" not in err, err


# ------------------------------------------------------------------ progress bar


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_is_silent_off_a_terminal_unless_forced():
    quiet = io.StringIO()
    bar = ProgressBar("x", stream=quiet, delay=0, interval=0)
    for i in range(11):
        bar(i, 10)
    assert quiet.getvalue() == ""
    forced = io.StringIO()
    bar = ProgressBar("x", stream=forced, force=True, delay=0, interval=0)
    for i in range(11):
        bar(i, 10)
    assert forced.getvalue().endswith("\n") and "10/10" in forced.getvalue() and "100%" in forced.getvalue()


def test_progress_bar_waits_for_its_delay_and_limits_its_rate():
    clock, tty = _Clock(), _Tty()
    bar = ProgressBar("merges", stream=tty, delay=1.0, interval=0.5, clock=clock)
    for i in range(100):  # a short run: nothing drawn
        clock.t = i * 0.005
        bar(i, 1000)
    assert tty.getvalue() == "" and bar.draws == 0
    for i in range(100, 1000):  # 0.005 s per step: 4.5 s more at most 10 draws
        clock.t = i * 0.005
        bar(i, 1000)
    assert 5 <= bar.draws <= 10
    clock.t = 5.0
    bar(1000, 1000)  # the end is always drawn, and ends the line
    assert tty.getvalue().endswith("\n") and "1000/1000" in tty.getvalue()
    assert "left" in tty.getvalue().split("\r")[-2]
    # a short run that ends before the delay leaves the terminal untouched
    tty2 = _Tty()
    with ProgressBar(stream=tty2, clock=clock) as bar2:
        bar2(5, 5)
    assert tty2.getvalue() == ""


def test_progress_bar_rejects_bad_settings():
    with pytest.raises(ValueError, match="delay"):
        ProgressBar(delay=-1)
    with pytest.raises(ValueError, match="width"):
        ProgressBar(width=0)


# ------------------------------------------------------------------ corpora


def test_stdlib_corpus_is_deterministic_and_cut_at_characters():
    files = corpus.stdlib_files()
    assert files and all(p.suffix == ".py" for p in files)
    assert not any("site-packages" in p.parts for p in files)
    a = corpus.stdlib_text(50_000, offset=123)
    assert a == corpus.stdlib_text(50_000, offset=123)
    assert 50_000 - 3 <= len(a.encode()) <= 50_000
    assert corpus.stdlib_text(10) + corpus.stdlib_text(10, offset=10) == corpus.stdlib_text(20)
    with pytest.raises(ValueError, match="n_bytes"):
        corpus.stdlib_text(-1)


def test_english_corpus_missing_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/build-corpus"):
        corpus.english_paths(tmp_path)

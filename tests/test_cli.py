"""The attnspec command: the tour's table and figures, and argument errors."""

from __future__ import annotations

import numpy as np
import pytest

from backends import cli, registry


def test_tour_reports_every_op_and_backend_within_tolerance(tmp_path, capsys):
    status = cli.main(["tour", "--small", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    for op in registry.ops():
        for e in registry.entries(op):
            assert any(line.split()[:2] == [op, e.name.split("/", 1)[1]] for line in out.splitlines()), out
    assert " NO " not in out
    pngs = list(tmp_path.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)


def noisy_forward(q, k, v, **options):
    """The spec's forward plus noise far above float32 rounding."""
    from spec.attention.tiled import flash_forward

    o, lse = flash_forward(q, k, v, **options)
    return o + np.float32(1e-3), lse


def test_tour_flags_an_implementation_outside_tolerance(monkeypatch):
    """The tour's yes/no column can say no: a backend off by 1e-3 is flagged."""
    noisy = registry.Entry(
        "attention.flash_forward", "noisy", None, "tests.test_cli:noisy_forward",
        "spec.attention.tiled:flash_forward", (registry.F32,),
    )
    monkeypatch.setattr(registry, "_ENTRIES", registry._ENTRIES + (noisy,))
    rows = {(r.op, r.backend): r for r in cli.tour_rows(small=True, repeats=1)}
    assert not rows["attention.flash_forward", "noisy"].within
    assert rows["attention.flash_forward", "spec"].within


def test_conformance_rejects_an_unknown_backend():
    with pytest.raises(SystemExit, match="unknown backend 'tpu'"):
        cli.main(["conformance", "--backend", "tpu"])


def test_bench_rejects_an_unknown_op():
    with pytest.raises(SystemExit, match="no benchmark for 'nope'"):
        cli.main(["bench", "nope"])


def test_tour_says_why_an_entry_did_not_run():
    """Entries this machine cannot run get a row with the reason, not a silent gap."""
    from backends.cuda import engine

    rows = {(r.op, r.backend): r for r in cli.tour_rows(small=True, repeats=1)}
    tc = rows["attention.flash_forward", "cuda[tc]"]
    if engine() == "emulator":
        assert tc.within is None and "needs a GPU" in tc.note
    else:  # on a GPU the tensor-core kernel takes float16 only; the tour runs float32
        assert tc.within is None and "takes float16" in tc.note
    assert "cuda[tc]" in cli.format_table(list(rows.values()))

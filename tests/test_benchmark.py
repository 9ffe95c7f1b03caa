"""scripts/benchmark.py on cfg/smoke.yml: every phase, the amortised training step and peak memory, for our
networks and the reference-style transcription in one run."""
import json

import pytest
import torch

from conftest import REPO_ROOT, load_script
from pixelface.networks import layers

SMOKE = str(REPO_ROOT / "cfg" / "smoke.yml")


def test_benchmark_reports_every_phase_against_the_reference(capsys):
    bench = load_script("benchmark")
    assert bench.main(["--cfg", SMOKE, "--batch", "4", "--threads", "1", "--repeats", "1", "--reference",
                       "--settle", "0.1"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out.strip().splitlines()[-1])
    phases = result["phases"]
    assert result["cpu"] and result["cpu"] != "unknown"    # the ratios depend on the CPU's kernels
    assert set(phases) == set(bench.PHASES) | {"train_step"}
    for name, row in phases.items():
        assert row["ours"]["cpu_s"] > 0 and row["reference"]["cpu_s"] > 0, name
        assert row["time_ratio"] > 0, name
        if name != "train_step":                            # each phase says how clean its repeats were
            assert row["clean"]["repeats"] == 1 and row["clean"]["medians_of"] in ("clean", "all"), name
    assert phases["g_forward"]["ours"]["img_per_s"] > 0
    step, parts = phases["train_step"]["ours"], [phases[p]["ours"]["cpu_s"] for p in ("d_main", "d_reg", "g_main", "g_reg")]
    r1, pl = result["intervals"]["R1"], result["intervals"]["PL"]
    assert abs(step["cpu_s"] - (parts[0] + parts[1] / r1 + parts[2] + parts[3] / pl)) < 1e-3
    assert "train_step" in out.err     # the readable table goes to stderr


def test_linear_rows_side_and_profile(capsys):
    bench = load_script("benchmark")
    before = layers.CONV_ROWS_MIN
    assert bench.main(["--cfg", SMOKE, "--batch", "2", "--threads", "1", "--repeats", "1", "--no-memory",
                       "--phases", "g_forward_backward", "--linear-rows", "--profile", "5", "--settle", "0"]) == 0
    out = capsys.readouterr()
    assert "profile of g_forward_backward, ours_linear_rows" in out.err and "Input Shapes" in out.err
    row = json.loads(out.out.strip().splitlines()[-1])["phases"]["g_forward_backward"]
    assert row["ours_linear_rows"]["cpu_s"] > 0 and row["linear_rows_ratio"] > 0
    assert "ours / ours with F.linear rows" in out.err
    assert layers.CONV_ROWS_MIN == before
    with pytest.raises(SystemExit):
        bench.parse_args(["--linear-rows", "--compile"])


def test_benchmark_refuses_fp16_on_cpu_and_takes_bf16(capsys):
    bench = load_script("benchmark")
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--amp", "fp16"])
    assert e.value.code == 2
    assert "--amp fp16 is a CUDA option" in capsys.readouterr().err
    assert bench.parse_args(["--amp", "bf16", "--channels-last"]).amp == "bf16"


def test_reference_float32_runs_the_reference_side_without_autocast(capsys, monkeypatch):
    """--amp bf16 --reference-float32: ours under bf16 autocast, the reference side in float32 (as published); the
    JSON and the table name each side's precision, and the D scores each side computes have that dtype."""
    bench = load_script("benchmark")
    seen = {}
    ours_d, ref_d = bench.Ours.discriminate, bench.Reference.discriminate

    def record(name, original):
        def discriminate(self, *args, **kwargs):
            logit, cond = original(self, *args, **kwargs)
            seen.setdefault(name, set()).add(logit.dtype)
            return logit, cond
        return discriminate
    monkeypatch.setattr(bench.Ours, "discriminate", record("ours", ours_d))
    monkeypatch.setattr(bench.Reference, "discriminate", record("reference", ref_d))
    assert bench.main(["--cfg", SMOKE, "--batch", "2", "--threads", "1", "--repeats", "1", "--no-memory", "--reference",
                       "--phases", "d_forward_backward,d_reg", "--amp", "bf16", "--reference-float32",
                       "--settle", "0"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out.strip().splitlines()[-1])
    assert result["precision"] == {"ours": "bfloat16", "reference": "float32"}
    assert seen == {"ours": {torch.bfloat16}, "reference": {torch.float32}}     # R1 (d_reg) included
    assert "precision: ours bfloat16, reference float32" in out.err


def test_medians_leave_out_the_repeats_that_other_work_disturbed(monkeypatch):
    bench = load_script("benchmark")
    # exits in order per repeat: ours, reference, then the whole repeat's window (its foreign load)
    windows = iter([bench.LoadWindow(1.0, 1.0, None), bench.LoadWindow(9.0, 9.0, None), bench.LoadWindow(10, 10, 0.40),
                    bench.LoadWindow(2.0, 2.0, None), bench.LoadWindow(4.0, 4.0, None), bench.LoadWindow(6, 6, 0.01),
                    bench.LoadWindow(3.0, 3.0, None), bench.LoadWindow(7.0, 7.0, None), bench.LoadWindow(8, 8, 0.02)])

    class FakeWindow:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.result = next(windows)

    monkeypatch.setattr(bench, "load_window", FakeWindow)
    nets = [type("Side", (), {"name": name})() for name in ("ours", "reference")]
    args = bench.parse_args(["--repeats", "3", "--no-memory"])
    row = bench.measure_phase(lambda net: None, nets, args, torch.device("cpu"))
    # repeat 2 runs the reference first: its calls exit reference, then ours
    assert row["clean"] == {"repeats": 3, "clean": 2, "medians_of": "clean", "max_foreign": 0.4}
    assert row["ours"]["cpu_s"] == 3.5 and row["reference"]["cpu_s"] == 4.5   # medians of (4, 3) and (2, 7)

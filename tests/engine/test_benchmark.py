"""`molmo-edge bench` and `molmo_edge.engine.benchmark`: real backends, real transformers, real JSON.

The end-to-end tests run the CLI on the tiny unit-scale checkpoint (see conftest.py): torch, an
ONNX bundle the command exports itself, and transformers' generate on the same weights.
"""
from __future__ import annotations

import json
import time

import pytest
import torch
from hypothesis import given, settings, strategies as st

from molmo_edge.cli import main
from molmo_edge.engine.benchmark import (BenchSettings, RssSampler, Subject, WindowRun, answer_length,
                                         decode_bandwidth, first_difference, known_gpu_bandwidth,
                                         measure_copy_bandwidth, run_benchmark, summarize, synthetic_frames,
                                         window_inputs)
from molmo_edge.engine.bench_machine import decoder_weight_params, describe_machine, kv_bytes_per_token
from molmo_edge.errors import MolmoEdgeError

REQUIRED = ("window_ms", "decode_tok_s", "vit_ms_per_frame", "prefill_ms")


@pytest.fixture(scope="module")
def bench_report(engine_checkpoint_dir, tmp_path_factory):
    """One CLI run: torch and onnx (temporary bundle) against transformers, 2 frames, 4 tokens."""
    pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    code = main(["bench", "--model", str(engine_checkpoint_dir), "--backend", "torch,onnx", "--compare-transformers",
                 "--frames", "2", "--frame-size", "64x48", "--repeats", "3", "--warmup", "1", "--new-tokens", "4",
                 "--bandwidth-gb-s", "10", "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def test_json_has_one_record_per_backend_with_the_required_fields(bench_report):
    records = {r["name"]: r for r in bench_report["records"]}
    assert list(records) == ["torch", "onnx", "transformers"]
    assert bench_report["reference"] == "transformers"
    for name, record in records.items():
        for field in REQUIRED:
            assert record[field] is not None and record[field] > 0, (name, field)
        assert record["connector_ms"] > 0
        assert record["tokens_generated"] == 4  # EOS ignored: every subject decodes exactly M tokens
        stats = record["stats"]["window_ms"]
        assert stats["n"] == 3 and stats["min"] <= stats["median"] <= stats["p90"] <= stats["max"]
        assert record["load_s"] > 0
    for name in ("torch", "onnx"):
        record = records[name]
        expected = records["transformers"]["window_ms"] / record["window_ms"]
        assert record["speedup_vs_transformers"] == pytest.approx(expected)
        assert set(record["stage_speedup_vs_transformers"]) == {"vit", "connector", "prefill", "decode"}
    assert "speedup_vs_transformers" not in records["transformers"]


def test_identical_weights_and_inputs_give_the_same_greedy_tokens(bench_report):
    records = {r["name"]: r for r in bench_report["records"]}
    reference = records["transformers"]["token_ids"]
    assert len(reference) == 4
    for name in ("torch", "onnx"):
        assert records[name]["token_ids"] == reference, name
        assert records[name]["same_answer_as_reference"] is True


def test_every_stage_and_the_window_are_timed(bench_report):
    """Each record carries a positive time for every stage and for the whole window. Relations
    between timings are not asserted: on a shared CI machine any one measurement can be an outlier,
    and speed is judged from the benchmark's JSON, not from tests."""
    for record in bench_report["records"]:
        for key in ("vit_ms_per_frame", "connector_ms", "prefill_ms"):
            assert record[key] > 0, (record["name"], key)
        window = record["stats"]["window_ms"]
        assert 0 < window["min"] <= window["median"] <= window["max"], record["name"]


def test_machine_and_window_are_described(bench_report):
    machine = bench_report["machine"]
    for key in ("cpu", "cpu_cores", "ram_gb", "torch", "onnxruntime", "transformers", "gpu"):
        assert key in machine
    assert machine["cpu_cores"] >= 1 and machine["ram_gb"] > 0
    window = bench_report["window"]
    assert window["frames"] == 2 and window["frame_size_px"] == [64, 48]
    assert 0 < window["visual_tokens"] < window["prompt_tokens"]
    assert bench_report["arguments"]["new_tokens"] == 4


def test_decode_bandwidth_is_reported(bench_report):
    for record in bench_report["records"]:
        roofline = record["decode_bandwidth"]
        assert roofline["bandwidth_gb_s"] == 10 and roofline["bandwidth_source"] == "given"
        assert roofline["fraction_of_limit"] == pytest.approx(record["decode_tok_s"] / roofline["limit_tok_s"])


# ----------------------------------------------------------------------------- the interleaved loop
class SleepingSubject(Subject):
    """A Subject whose stages take known times (a real implementation of the interface, for the loop's logic)."""

    def __init__(self, name: str, kind: str, window_s: float, log: list[str]) -> None:
        from molmo_edge.model import Molmo2Config

        self.name, self.kind, self.window_s, self.log = name, kind, window_s, log
        self.device, self.precision, self.config = torch.device("cpu"), "fp32", Molmo2Config.preset("tiny-test")

    def prepare(self, inputs, settings) -> None:
        self.log.append(f"prepare {self.name}")
        self.n_tokens = settings.new_tokens

    def run_vit(self) -> None:
        time.sleep(0.001)

    def run_connector(self) -> None:
        pass

    def run_prefill(self) -> None:
        time.sleep(0.001)

    def run_window(self) -> WindowRun:
        self.log.append(self.name)
        time.sleep(self.window_s)
        return WindowRun([1] * self.n_tokens, self.n_tokens - 1, (self.n_tokens - 1) / self.window_s)


def test_repeats_are_interleaved_rotated_and_warmup_is_dropped(torch_backend):
    log: list[str] = []
    subjects = [SleepingSubject("fast", "onnx", 0.01, log), SleepingSubject("slow", "transformers", 0.03, log)]
    inputs = window_inputs(torch_backend.processor, synthetic_frames(2, 32, 32), [0.0, 0.5], "Track all circles.")
    report = run_benchmark(subjects, inputs, BenchSettings(repeats=4, warmup=1, measure_memory=False,
                                                           bandwidth_gb_s=1.0))
    windows = [entry for entry in log if not entry.startswith("prepare")]
    # repeat r starts with subject r mod 2: fast slow | slow fast | fast slow | ...
    assert windows == ["fast", "slow", "slow", "fast", "fast", "slow", "slow", "fast", "fast", "slow"]
    fast = report.result("fast")
    assert len(fast.samples["window_ms"]) == 4  # the warm-up repeat is not kept
    record = {r["name"]: r for r in report.to_dict()["records"]}["fast"]
    assert 1.5 < record["speedup_vs_transformers"] < 4.5  # 30 ms vs 10 ms windows, with sleep jitter


def test_a_subject_that_stops_early_is_refused(torch_backend):
    """Window times are only comparable when every subject generated the same M tokens."""
    class StopsEarly(SleepingSubject):
        def run_window(self) -> WindowRun:
            return WindowRun([1, 2], 1, 100.0)

    inputs = window_inputs(torch_backend.processor, synthetic_frames(1, 32, 32), [0.0], "Track all circles.")
    subjects = [SleepingSubject("ok", "onnx", 0.001, []), StopsEarly("early", "transformers", 0.001, [])]
    with pytest.raises(MolmoEdgeError, match="early generated 2 tokens"):
        run_benchmark(subjects, inputs, BenchSettings(new_tokens=8, repeats=1, warmup=0, measure_memory=False,
                                                      bandwidth_gb_s=1.0))


# ----------------------------------------------------------------------------- pieces
@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_summary_statistics_are_ordered(values):
    stats = summarize(values)
    assert stats["min"] <= stats["median"] <= stats["p90"] <= stats["max"]
    assert stats["min"] <= stats["mean"] <= stats["max"] + 1e-6
    assert stats["n"] == len(values)


def test_summary_skips_missing_values():
    assert summarize([]) is None and summarize([None]) is None
    assert summarize([None, 2.0, 4.0])["median"] == 3.0


@given(st.lists(st.integers(0, 5), max_size=12), st.lists(st.integers(0, 5), max_size=12))
def test_first_difference(a, b):
    index = first_difference(a, b)
    if index is None:
        assert a == b
    else:
        assert a[:index] == b[:index] and (index == min(len(a), len(b)) or a[index] != b[index])


def test_answer_length_stops_at_the_first_eos():
    assert answer_length([5, 6, 9, 7, 9], {9}) == 3
    assert answer_length([5, 6], {9}) == 2


def test_decoder_weight_count_matches_the_real_model(tiny_model):
    decoder = tiny_model.decoder
    expected = sum(p.numel() for p in decoder.layers.parameters()) + sum(p.numel() for p in decoder.norm.parameters())
    expected += tiny_model.lm_head.weight.numel()
    assert decoder_weight_params(tiny_model.config) == expected


def test_decode_bandwidth_arithmetic(tiny_config):
    roofline = decode_bandwidth(tiny_config, 2.0, context_tokens=100, tok_s=50.0, bandwidth_gb_s=1.0, source="x")
    per_token = decoder_weight_params(tiny_config) * 2.0 + kv_bytes_per_token(tiny_config, 2.0) * 100
    assert roofline["bytes_per_token"] == pytest.approx(per_token)
    assert roofline["limit_tok_s"] == pytest.approx(1e9 / per_token)
    assert roofline["fraction_of_limit"] == pytest.approx(50.0 * per_token / 1e9)


def test_known_gpus_and_measured_bandwidth():
    assert known_gpu_bandwidth("NVIDIA H100 80GB HBM3") == 3350.0
    assert known_gpu_bandwidth("NVIDIA H200") == 4800.0
    assert known_gpu_bandwidth("NVIDIA H100 PCIe") == 2000.0
    assert known_gpu_bandwidth("Some Future Accelerator") is None
    assert 0.1 < measure_copy_bandwidth("cpu", n_bytes=16 * 2**20, repeats=2) < 10_000


def test_rss_sampler_sees_an_allocation():
    import numpy as np

    with RssSampler() as sampler:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, written so the pages are resident
        time.sleep(0.02)
        del block
    assert sampler.peak_delta_bytes >= 48 * 2**20


def test_describe_machine_without_importing_heavy_packages():
    import sys

    machine = describe_machine()
    assert machine["torch"] == torch.__version__
    assert machine["cpu_cores_usable"] <= machine["cpu_cores"]
    assert "tensorrt" not in sys.modules or machine["tensorrt"] is not None


# ----------------------------------------------------------------------------- the CLI's checks
def test_unknown_backend_is_refused(capsys):
    assert main(["bench", "--backend", "torch,warp"]) == 2
    assert "--backend" in capsys.readouterr().err


def test_transformers_needs_the_checkpoint_not_a_bundle(engine_checkpoint_dir, tmp_path, capsys):
    from molmo_edge.export.exporter import export_bundle

    bundle = export_bundle(engine_checkpoint_dir, tmp_path / "bundle").bundle_dir
    assert main(["bench", "--model", str(bundle), "--backend", "onnx", "--compare-transformers"]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_preset_needs_random_init(capsys):
    assert main(["bench", "--preset", "tiny-test", "--backend", "torch"]) == 2
    assert "--random-init" in capsys.readouterr().err


def test_random_init_preset_against_transformers(tmp_path):
    """The path the GPU report uses for a Molmo2-4B-shaped model, at the tiny preset's size."""
    pytest.importorskip("transformers")
    out = tmp_path / "preset.json"
    assert main(["bench", "--preset", "tiny-test", "--random-init", "--device", "cpu", "--backend", "torch",
                 "--compare-transformers", "--frames", "1", "--repeats", "1", "--warmup", "0", "--new-tokens", "2",
                 "--bandwidth-gb-s", "5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"]["random_init"] is True and report["model"]["preset"] == "tiny-test"
    torch_record = report["records"][0]
    assert torch_record["speedup_vs_transformers"] > 0 and torch_record["tokens_generated"] == 2

"""`molmo-edge bench`: backends side by side on one window (and against transformers), or the stream.

    molmo-edge bench --backend torch,onnx --compare-transformers --json bench.json
    molmo-edge bench --model ckpt/ --bundle bundle-int8/ --backend onnx --frames 8 --new-tokens 128
    molmo-edge bench --preset molmo2-4b --random-init --device cuda --backend torch --compare-transformers
    molmo-edge bench --stream --backend onnx --minutes 10 --json stream.json

Backends: `torch` (the checkpoint, eager), `torch-int8` / `torch-nf4` (bitsandbytes decoder
weights), `onnx`, `tensorrt`. The bundle backends run `--bundle DIR`, or the bundle `--model`
points at, or else a temporary fp32 bundle exported from the checkpoint first. Every backend and
transformers get the same weights and the same processor tensors, and are measured interleaved in
one run (see `molmo_edge.engine.benchmark`). `--threads T` gives torch and ONNX Runtime the same
number of threads; on a machine shared with other work, a thread count below the free cores keeps
the numbers meaningful.

`--stream` runs `molmo_edge.stream.benchmark` per backend instead: feature cache vs recompute,
windows per second and capture -> publish latency (events go through a real ZeroMQ publisher on a
loopback port), and RSS over `--minutes` with a growth check.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from molmo_edge.errors import ConfigError
from molmo_edge.report_paths import portable_path

BACKENDS = ("torch", "torch-int8", "torch-nf4", "onnx", "tensorrt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint or bundle folder (default: the shipped model)")
    parser.add_argument("--bundle", default=None, help="bundle folder for the onnx / tensorrt backends "
                                                       "(default: export a temporary fp32 bundle from --model)")
    parser.add_argument("--backend", default="torch,onnx", help=f"comma-separated, any of {', '.join(BACKENDS)} "
                                                                "(default torch,onnx)")
    parser.add_argument("--compare-transformers", action="store_true",
                        help="also run transformers' Molmo2ForConditionalGeneration.generate on the same weights")
    parser.add_argument("--preset", default=None, help="with --random-init: a Molmo2Config preset, e.g. molmo2-4b")
    parser.add_argument("--random-init", action="store_true", help="benchmark a random-init --preset model")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="torch and transformers: float32, bfloat16, float16 "
                                                      "(default float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for torch and ONNX Runtime "
                                                                   "(default: the libraries' own)")
    parser.add_argument("--frames", type=int, default=8, help="N: frames in the window (default 8)")
    parser.add_argument("--frame-size", default="256x256", help="WxH of the generated frames (default 256x256)")
    parser.add_argument("--new-tokens", type=int, default=64, help="M: tokens generated per window (default 64)")
    parser.add_argument("--stop-at-eos", action="store_true", help="stop at the model's EOS instead of exactly M")
    parser.add_argument("--prompt", default="Track all circles.", help="the window's question")
    parser.add_argument("--repeats", type=int, default=5, help="measured repeats (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up repeats, dropped (default 1)")
    parser.add_argument("--bandwidth-gb-s", type=float, default=None,
                        help="memory bandwidth for the decode roofline (default: GPU table, else measured)")
    parser.add_argument("--json", default=None, help="write the full report here")
    stream = parser.add_argument_group("stream benchmark (--stream)")
    stream.add_argument("--stream", action="store_true", help="benchmark the streaming pipeline instead")
    stream.add_argument("--minutes", type=float, default=None, help="length of the sustained run (default 1)")
    stream.add_argument("--seconds", type=float, default=None, help="the same in seconds")
    stream.add_argument("--source", default="synthetic:0:256x256", help="source spec (default synthetic:0:256x256)")
    stream.add_argument("--realtime", action="store_true", help="read the source at its own pace (a live camera)")
    stream.add_argument("--window", type=int, default=8, help="frames per window (default 8)")
    stream.add_argument("--stride", type=int, default=2, help="new frames per window (default 2)")
    stream.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit (default 256)")
    stream.add_argument("--cache-windows", type=int, default=6, help="windows of the cache comparison (default 6)")
    stream.add_argument("--pub", default="tcp://127.0.0.1:*",
                        help="ZeroMQ PUB endpoint events go to during the run (default a free loopback port; "
                             "'none' for no publisher)")


def parse_backends(text: str) -> list[str]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if not names or unknown:
        raise ConfigError(f"--backend {text!r}: use a comma-separated list of {', '.join(BACKENDS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--backend {text!r} names a backend twice")
    return names


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--frame-size {text!r}: expected WxH, e.g. 256x256") from None
    if width < 14 or height < 14:
        raise ConfigError(f"--frame-size {text!r}: frames must be at least 14 px on each side")
    return width, height


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- models
def random_init_checkpoint(preset: str, folder: Path, device: str | None, dtype: str | None) -> Path:
    """Save a random-init model of `preset`'s shapes (the project's small tokenizer supplies the special
    token ids; the vocabulary keeps the preset's size, so the lm_head is full size) into `folder`."""
    import torch

    from molmo_edge.engine.torch_backend import default_device, default_dtype
    from molmo_edge.model import Molmo2Config, Molmo2ForConditionalGeneration, save_checkpoint
    from molmo_edge.model.checkpoint import resolve_dtype
    from molmo_edge.training.tokenizer_builder import build_tokenizer

    tokenizer = build_tokenizer()
    config = Molmo2Config.preset(preset)
    sized = config.with_tokenizer(tokenizer)
    # Keep the preset's (larger) vocabulary: the embedding table and lm_head are a real share of a 4B model.
    sized = sized.validated_copy(text=sized.text.model_copy(update={
        "vocab_size": max(config.text.vocab_size, sized.text.vocab_size),
        "additional_vocab_size": max(config.text.additional_vocab_size, sized.text.additional_vocab_size)}))
    target = torch.device(device) if device else default_device()
    torch.manual_seed(0)
    with torch.device(target):
        model = Molmo2ForConditionalGeneration(sized).to(resolve_dtype(dtype) if dtype else default_dtype(target))
    save_checkpoint(model.eval(), folder, tokenizer=tokenizer)
    del model
    if target.type == "cuda":
        torch.cuda.empty_cache()  # the backends load their own copy from the folder
    return folder


def _threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ConfigError("--threads must be at least 1")
        torch.set_num_threads(args.threads)


def load_subject(name: str, checkpoint: Path | None, bundle: Path | None, args: argparse.Namespace):
    """One benchmark subject (a BackendSubject) by backend name; what loading it cost goes into its `extra`."""
    from molmo_edge.engine.benchmark import BackendSubject, measure_load

    if name.startswith("torch"):
        if checkpoint is None:
            raise ConfigError(f"the {name} backend needs a checkpoint folder; --model is a bundle")
        from molmo_edge.engine.torch_backend import TorchBackend

        quantization = name.split("-", 1)[1] if "-" in name else None
        backend, load = measure_load(lambda: TorchBackend.from_checkpoint(
            checkpoint, device=args.device, dtype=args.dtype, quantization=quantization))
    elif name == "onnx":
        from molmo_edge.engine.onnx_backend import OnnxBackend, OnnxOptions

        threads = args.threads or 0
        options = OnnxOptions(intra_op_threads=threads, inter_op_threads=1 if threads else 0)
        backend, load = measure_load(lambda: OnnxBackend.from_bundle(bundle, device=args.device, options=options))
    else:
        from molmo_edge.engine.tensorrt_backend import TensorRTBackend

        backend, load = measure_load(lambda: TensorRTBackend.from_bundle(bundle, device=args.device))
    subject = BackendSubject(backend, name=name, owned=True)
    subject.extra = dict(load, threads=args.threads)
    return subject


def _frames(args: argparse.Namespace) -> tuple[list, list[float]]:
    """N frames of a synthetic scene (the shipped model's task) 1/fps apart; plain generated frames if
    the scene generator is not installed."""
    from molmo_edge.engine.benchmark import synthetic_frames

    width, height = parse_size(args.frame_size)
    times = [i * 0.5 for i in range(args.frames)]
    try:
        from molmo_edge.training.scenes import SceneSimulator
    except ImportError:
        return synthetic_frames(args.frames, width, height), times
    scene = SceneSimulator(0, width, height)
    return [scene.frame_at(t).rgb for t in times], times


def resolve_models(args: argparse.Namespace, backends: list[str], stack: contextlib.ExitStack) -> tuple[Path | None, Path | None]:
    """(checkpoint folder or None, bundle folder or None) for this run, exporting a temporary bundle if needed."""
    from molmo_edge.engine.loading import resolve_model_path

    if args.random_init or args.preset:
        if not (args.random_init and args.preset):
            raise ConfigError("--preset and --random-init go together: --preset NAME --random-init")
        if args.model:
            raise ConfigError("--random-init builds its own model; drop --model")
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="molmo-bench-init-")))
        _say(f"building a random-init {args.preset} model")
        checkpoint: Path | None = random_init_checkpoint(args.preset, folder, args.device, args.dtype)
        bundle = None
    else:
        folder, kind = resolve_model_path(args.model)
        checkpoint, bundle = (folder, None) if kind == "checkpoint" else (None, folder)
    if args.bundle:
        bundle_folder, kind = resolve_model_path(args.bundle)
        if kind != "bundle":
            raise ConfigError(f"--bundle {args.bundle} is not a bundle folder (no manifest.json)")
        bundle = bundle_folder
    if args.compare_transformers and checkpoint is None:
        raise ConfigError("--compare-transformers loads the weights with transformers, which needs the checkpoint "
                          "folder the bundle was exported from: pass it with --model and the bundle with --bundle")
    if any(b in ("onnx", "tensorrt") for b in backends) and bundle is None:
        from molmo_edge.export.exporter import ExportOptions, export_bundle

        out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="molmo-bench-bundle-"))) / "bundle"
        _say(f"exporting a temporary fp32 bundle of {checkpoint}")
        bundle = export_bundle(checkpoint, out, ExportOptions(tensorrt="tensorrt" in backends)).bundle_dir
    return checkpoint, bundle


# ----------------------------------------------------------------------------- the two modes
def run_window_bench(args: argparse.Namespace, backends: list[str], checkpoint: Path | None,
                     bundle: Path | None) -> dict[str, Any]:
    from molmo_edge.engine.benchmark import BenchSettings, TransformersSubject, measure_load, run_benchmark, window_inputs

    settings = BenchSettings(new_tokens=args.new_tokens, repeats=args.repeats, warmup=args.warmup,
                             stop_at_eos=args.stop_at_eos, bandwidth_gb_s=args.bandwidth_gb_s)
    subjects = []
    try:
        for name in backends:
            _say(f"loading {name}")
            subjects.append(load_subject(name, checkpoint, bundle, args))
        if args.compare_transformers:
            import torch

            from molmo_edge.engine.torch_backend import default_device, default_dtype
            from molmo_edge.model.checkpoint import resolve_dtype

            device = torch.device(args.device) if args.device else default_device()
            dtype = resolve_dtype(args.dtype) if args.dtype else default_dtype(device)
            _say("loading transformers")
            reference, load = measure_load(lambda: TransformersSubject.from_checkpoint(checkpoint, device, dtype))
            reference.extra = dict(load, threads=args.threads)
            subjects.append(reference)
        _check_same_processing(subjects)
        frames, times = _frames(args)
        inputs = window_inputs(subjects[0].backend.processor, frames, times, args.prompt)
        report = run_benchmark(subjects, inputs, settings, progress=_say)
        print(report.table())
        data = report.to_dict()
        data["model"] = {"checkpoint": portable_path(checkpoint), "bundle": portable_path(bundle),
                         "preset": args.preset,
                         "random_init": bool(args.random_init)}
        return data
    finally:
        for subject in subjects:
            subject.close()


def _check_same_processing(subjects: list) -> None:
    """Every backend must turn frames into the same tensors, or 'identical inputs' would not hold."""
    processors = [s.backend.processor for s in subjects if hasattr(s, "backend")]
    first = processors[0]
    for other in processors[1:]:
        if other.cfg != first.cfg or other.token_ids != first.token_ids:
            raise ConfigError("the checkpoint and the bundle preprocess differently (processor settings or token "
                              "ids); export the bundle from this checkpoint")


def run_stream_bench(args: argparse.Namespace, backends: list[str], checkpoint: Path | None,
                     bundle: Path | None) -> dict[str, Any]:
    from molmo_edge.engine.engine import Engine
    from molmo_edge.stream.benchmark import StreamBenchSettings, run_stream_benchmark

    if args.compare_transformers:
        raise ConfigError("--compare-transformers applies to the window benchmark, not --stream")
    if args.minutes is not None and args.seconds is not None:
        raise ConfigError("give --minutes or --seconds, not both")
    seconds = args.seconds if args.seconds is not None else 60.0 * (args.minutes if args.minutes is not None else 1.0)
    settings = StreamBenchSettings(query=args.prompt, window=args.window, stride=args.stride,
                                   max_new_tokens=args.max_new_tokens, seconds=seconds, realtime=args.realtime,
                                   cache_windows=args.cache_windows)
    runs = []
    for name in backends:
        _say(f"loading {name}")
        subject = load_subject(name, checkpoint, bundle, args)
        publisher = None
        try:
            sinks = []
            if args.pub.lower() != "none":
                from molmo_edge.publish.endpoints import normalize_endpoint
                from molmo_edge.publish.zmq_publisher import EventPublisher, PublisherConfig

                publisher = EventPublisher(PublisherConfig(endpoint=normalize_endpoint(args.pub),
                                                           latest_endpoint=None)).start()
                sinks.append(publisher)
                _say(f"publishing events on {publisher.endpoint}")
            report = run_stream_benchmark(Engine(subject.backend), args.source, settings, sinks=sinks, progress=_say)
        finally:
            if publisher is not None:
                publisher.close()
            subject.close()
        print(report.summary())
        data = report.to_dict()
        data.update(name=name, load=subject.extra,
                    publisher=publisher.stats.model_dump() if publisher is not None else None)
        runs.append(data)
    return {"kind": "molmo-edge-stream-bench-runs", "version": 1, "runs": runs,
            "model": {"checkpoint": portable_path(checkpoint), "bundle": portable_path(bundle)}}


def run(args: argparse.Namespace) -> int:
    backends = parse_backends(args.backend)
    if args.frames < 1 or args.repeats < 1 or args.warmup < 0 or args.new_tokens < 2:
        raise ConfigError("--frames and --repeats must be >= 1, --warmup >= 0, --new-tokens >= 2")
    _threads(args)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        checkpoint, bundle = resolve_models(args, backends, stack)
        if args.stream:
            data = run_stream_bench(args, backends, checkpoint, bundle)
        else:
            data = run_window_bench(args, backends, checkpoint, bundle)
    data["wall_s"] = time.perf_counter() - started
    data["arguments"] = {k: v for k, v in vars(args).items() if k != "verbose"}  # reproduces the run
    for key in ("model", "bundle", "json"):  # paths as they mean something on another machine
        if data["arguments"].get(key):
            data["arguments"][key] = portable_path(data["arguments"][key])
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        _say(f"report written to {path}")
    return 0

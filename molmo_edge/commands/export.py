"""`molmo-edge export [MODEL] --out DIR`: a checkpoint folder -> a bundle of ONNX graphs (+ TensorRT engines).

    molmo-edge export --out bundle/                                  # the shipped model, fp32
    molmo-edge export ckpt/ --out bundle-int8/ --precision int8 --calib clips/scene.mp4
    molmo-edge export ckpt/ --out bundle-fp16/ --precision fp16 --trt   # on the target GPU
    molmo-edge export ckpt/ --out bundle/ --verify                  # compare with torch; exit 1 if off

--calib takes a video file, a folder of images, or synthetic:SEED[:N] (the synthetic scene
generator; the default). --verify runs the bundle (ONNX Runtime, CPU) and the torch model on an
image with several crops and a short video, prints each stage's largest difference and whether
greedy answers match, and exits with code 1 when a difference is above the precision's tolerance.
"""
from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from molmo_edge.export.onnx_export import DEFAULT_OPSET, SUPPORTED_OPSETS

    parser.add_argument("model", nargs="?", default=None, metavar="MODEL",
                        help="checkpoint folder (default: the model shipped with molmo-edge)")
    parser.add_argument("--model", dest="model_option", default=None, help="the same as MODEL")
    parser.add_argument("--out", required=True, help="bundle folder to write (must be empty or new)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                        help="fp32 (default), fp16 graphs, or int8 (static Q/DQ vit + connector, dynamic int8 decoder)")
    parser.add_argument("--calib", default=None,
                        help="int8 calibration frames: video file, image folder or synthetic:SEED[:N] "
                             "(default synthetic:0, --calib-frames of them)")
    parser.add_argument("--calib-frames", type=int, default=32, help="most calibration frames to use (default 32)")
    parser.add_argument("--trt", "--tensorrt", dest="trt", action="store_true",
                        help="also build TensorRT engines (needs TensorRT and a CUDA GPU; build on the target device)")
    parser.add_argument("--trt-int8", choices=("qdq", "calibrator"), default="qdq",
                        help="int8 engines from the Q/DQ graphs (default) or TensorRT's entropy calibrator")
    parser.add_argument("--trt-max-context", type=int, default=4096,
                        help="longest sequence (prompt + answer) the TensorRT decoder engine holds (default 4096)")
    parser.add_argument("--verify", action="store_true", help="compare the bundle with the torch model afterwards")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, choices=SUPPORTED_OPSETS,
                        help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--external-data", action="store_true",
                        help="keep weights in <graph>.onnx.data files (automatic above ~1.8 GB)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle in --out")


def _progress(started: float):
    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    return say


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from molmo_edge.errors import ConfigError
    from molmo_edge.export.exporter import ExportOptions, export_bundle
    from molmo_edge.export.trt_engines import EngineLimits

    if args.model and args.model_option and args.model != args.model_option:
        raise ConfigError(f"MODEL {args.model!r} and --model {args.model_option!r} disagree; give one")
    if args.calib_frames < 1:
        raise ConfigError("--calib-frames must be at least 1")
    if args.calib and args.precision != "int8":
        raise ConfigError("--calib is used by --precision int8 only")
    model = args.model or args.model_option
    try:
        options = ExportOptions(precision=args.precision, opset=args.opset, calib=args.calib,
                                calib_max_frames=args.calib_frames, tensorrt=args.trt, tensorrt_int8=args.trt_int8,
                                engine_limits=EngineLimits(max_context_tokens=args.trt_max_context),
                                external_data=True if args.external_data else None, overwrite=args.overwrite)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid export options: {problems}") from None
    say = _progress(time.perf_counter())
    result = export_bundle(model, args.out, options, progress=say)
    print(result.summary())
    if not args.verify:
        return 0
    from molmo_edge.export.verify import verify_bundle

    report = verify_bundle(result.bundle_dir, model, progress=say)
    print(report.summary())
    return 0 if report.ok else 1

"""`molmo-edge point IMAGE --query TEXT`: point at objects in one image file.

    molmo-edge point shelf.jpg --query "red circle"                 # the shipped model
    molmo-edge point shelf.jpg --query "How many cups are there?" --model ckpt/ --json
    molmo-edge point shelf.jpg --query "blue star" --model bundle/ --out annotated.png

A bare label becomes the Molmo2 point prompt ("Point to red circle"); a full sentence is sent as
it is. Prints one line per point (normalised x, y in 0..1 and pixels), `There are none.` when the
model says so, or the JSON document with --json. Timings go to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from molmo_edge.errors import InputError

# Colours (BGR) cycled over object ids in the annotated image.
_COLOURS_BGR = [(0, 0, 255), (0, 200, 0), (255, 0, 0), (0, 200, 255), (255, 0, 255), (255, 255, 0)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from molmo_edge.engine.loading import BACKEND_CHOICES, QUANTIZATION_CHOICES

    parser.add_argument("image", metavar="IMAGE", help="image file (PNG, JPEG, ...)")
    parser.add_argument("--query", required=True,
                        help='what to point at: a label ("red circle") or a full instruction')
    parser.add_argument("--model", default=None,
                        help="checkpoint or bundle folder (default: the model shipped with molmo-edge)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="default auto")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="torch backend: float32, bfloat16, float16")
    parser.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None,
                        help="torch backend: bitsandbytes int8 or nf4 weights")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit (default 256)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--out", default=None, help="write the image with the points drawn on it (PNG/JPEG)")


def point_report(answer, query: str, prompt: str, image_path: str, backend_name: str) -> dict[str, Any]:
    """The JSON document of --json: the answer text, the points in both units, count and timings."""
    width, height = answer.image_sizes[0]
    result = answer.grounding
    return {
        "query": query,
        "prompt": prompt,
        "image": {"path": image_path, "width_px": width, "height_px": height},
        "backend": backend_name,
        "text": answer.text,
        "none": result.none,
        "count": result.count,
        "points": [{"object_id": p.object_id, "x_norm": p.x, "y_norm": p.y, "u_px": u_px, "v_px": v_px}
                   for p, u_px, v_px in answer.points_px()],
        "errors": list(result.errors),
        "timings_ms": {key: round(value, 3) for key, value in answer.timings_ms.items()},
        "tokens_per_s": round(answer.generation.tokens_per_s, 2),
    }


def draw_points(image_rgb, points_px: list[tuple[Any, float, float]], out_path: str | Path) -> Path:
    """Write `image_rgb` with a ringed dot and the object id at every point."""
    import cv2

    out_path = Path(out_path)
    canvas = image_rgb[:, :, ::-1].copy()  # RGB -> BGR for OpenCV
    radius = max(3, round(min(canvas.shape[:2]) / 60))
    for point, u_px, v_px in points_px:
        colour = _COLOURS_BGR[(point.object_id - 1) % len(_COLOURS_BGR)]
        centre = (int(round(u_px)), int(round(v_px)))
        cv2.circle(canvas, centre, radius + 2, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(canvas, centre, radius, colour, -1, cv2.LINE_AA)
        cv2.putText(canvas, str(point.object_id), (centre[0] + radius + 2, centre[1] - radius - 2),
                    cv2.FONT_HERSHEY_SIMPLEX, max(0.4, radius / 8), colour, 1, cv2.LINE_AA)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = cv2.imwrite(str(out_path), canvas)
    except cv2.error:
        written = False
    if not written:
        raise InputError(f"cannot write {out_path}; use a .png or .jpg file name in a writable folder")
    return out_path


def run(args: argparse.Namespace) -> int:
    from molmo_edge.engine.engine import Engine
    from molmo_edge.engine.image_file import read_image_rgb

    if args.max_new_tokens < 1:
        raise InputError("--max-new-tokens must be at least 1")
    image = read_image_rgb(args.image)  # before loading the model: a bad path fails fast
    prompt = Engine.prompt(args.query, "point")
    with Engine.from_pretrained(args.model, backend=args.backend, device=args.device, dtype=args.dtype,
                                quantization=args.quantization) as engine:
        answer = engine.ask_image(image, prompt, max_new_tokens=args.max_new_tokens)
        backend_name = engine.backend.name

    if args.json:
        print(json.dumps(point_report(answer, args.query, prompt, str(args.image), backend_name), indent=2))
    else:
        print_points(answer)
    t = answer.timings_ms
    print(f"{backend_name}: vision {t['vision']:.0f} ms, prefill {t['prefill']:.0f} ms, decode {t['decode']:.0f} ms "
          f"({answer.generation.tokens_per_s:.1f} tok/s), total {t['total']:.0f} ms", file=sys.stderr)
    if args.out:
        out = draw_points(image, answer.points_px(), args.out)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def print_points(answer) -> None:
    result = answer.grounding
    points = answer.points_px()
    if points:
        label = f" ({result.label})" if result.label else ""
        print(f"{len(points)} point{'s' if len(points) != 1 else ''}{label}:")
        for point, u_px, v_px in points:
            print(f"  object {point.object_id}: x_norm {point.x:.3f} y_norm {point.y:.3f}   "
                  f"u_px {u_px:.1f} v_px {v_px:.1f}")
    elif result.none:
        print("There are none.")
    else:
        print("No points in the answer.")
    print(f"answer: {answer.text}")

"""The machine a benchmark ran on, and the memory it used: CPU/GPU/library description, RSS sampling,
and the memory-bandwidth roofline of decoding.

    machine = describe_machine()                     # the `machine` block of every benchmark report
    with RssSampler() as rss: run_window()           # rss.peak_delta_bytes
    backend, seconds, rss_mb = measure_load(lambda: load_backend(path))
    decode_bandwidth(config, 2.0, context_tokens=900, tok_s=41.0, bandwidth_gb_s=3350.0, source="H100")

Decoding one token reads every decoder weight and the whole KV cache once; on a GPU (and on a
CPU once the weights no longer fit in cache) that makes memory bandwidth the limit, so tokens/s x
bytes per token / bandwidth says how much of the hardware a decode loop uses.
"""
from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:  # pragma: no cover
    from molmo_edge.model.config import Molmo2Config

# CPU features that decide which kernels the runtimes can use (listed when present).
_VECTOR_FLAGS = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
                 "amx_bf16", "amx_int8", "asimd", "sve"}

# Peak DRAM bandwidth in GB/s from the vendors' data sheets (matched as a substring of the device name,
# first match wins, so the more specific names come first).
KNOWN_GPU_BANDWIDTH_GB_S: dict[str, float] = {
    "H200": 4800.0, "H100 SXM": 3350.0, "H100 NVL": 3900.0, "H100 PCIe": 2000.0, "H100": 3350.0,
    "GH200": 4000.0, "B200": 8000.0, "A100-SXM4-80GB": 2039.0, "A100 80GB PCIe": 1935.0, "A100": 1555.0,
    "L40S": 864.0, "L40": 864.0, "L4": 300.0, "A10G": 600.0, "A10": 600.0, "T4": 320.0, "V100": 900.0,
    "RTX 4090": 1008.0, "RTX 4080": 717.0, "RTX 3090": 936.0, "RTX 6000 Ada": 960.0, "A6000": 768.0,
    "Orin": 204.8,  # Jetson AGX Orin 64 GB; Orin NX 102.4, Orin Nano 68 (name them with --bandwidth-gb-s)
}


def describe_machine() -> dict[str, Any]:
    """CPU model, cores, RAM, GPU, library versions and load: the `machine` block of every report."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            if flags and not cpu.startswith(platform.machine()):
                break
    except OSError:
        pass
    ram_gb = None
    try:
        ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cpu_vector_extensions": sorted(flags & _VECTOR_FLAGS), "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gb": round(ram_gb, 1) if ram_gb else None, "os": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    for package in ("onnxruntime", "onnxruntime-gpu", "transformers", "tensorrt"):
        try:  # the installed version, without importing the package
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    return info


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; psutil elsewhere; 0 when neither is there)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except Exception:  # noqa: BLE001 - no way to read it on this platform
            return 0


class RssSampler:
    """Samples RSS in a background thread while active: `with RssSampler() as s: ...; s.peak_delta_bytes`."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.start_bytes = self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RssSampler":
        self.start_bytes = self.peak_bytes = rss_bytes()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, rss_bytes())

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, rss_bytes())

    @property
    def peak_delta_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc `malloc_trim`), so that an RSS
    baseline taken next is not inflated by memory an earlier subject freed but the allocator kept."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS deltas may then read low
        pass


def measure_load(load: Callable[[], Any]) -> tuple[Any, dict[str, float | None]]:
    """(what `load()` returns, {load_s, load_rss_mb, load_cuda_mb}): the cost of loading a backend or a model.
    load_rss_mb is the peak RSS growth while loading; load_cuda_mb what torch holds on the GPU afterwards."""
    release_freed_memory()
    cuda = torch.cuda.is_available()
    cuda_before = torch.cuda.memory_allocated() if cuda else 0
    with RssSampler(interval_s=0.005) as sampler:
        start = time.perf_counter()
        loaded = load()
        seconds = time.perf_counter() - start
    return loaded, {"load_s": seconds, "load_rss_mb": (sampler.peak_bytes - sampler.start_bytes) / 2**20,
                    "load_cuda_mb": (torch.cuda.memory_allocated() - cuda_before) / 2**20 if cuda else None}


# ----------------------------------------------------------------------------- bandwidth
def decoder_weight_params(config: "Molmo2Config") -> int:
    """Parameters one decode step reads: every decoder layer, the final norm and the lm_head (the embedding
    table contributes one row, nothing to speak of)."""
    t = config.text
    attention = t.hidden_size * t.head_dim * (2 * t.num_attention_heads + 2 * t.num_key_value_heads)
    mlp = 3 * t.hidden_size * t.intermediate_size
    norms = 2 * t.hidden_size + 2 * t.head_dim
    return t.num_hidden_layers * (attention + mlp + norms) + t.hidden_size + t.hidden_size * t.vocab_size


def kv_bytes_per_token(config: "Molmo2Config", bytes_per_value: float) -> float:
    """Bytes of keys + values one token occupies in the cache (all layers)."""
    t = config.text
    return 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * bytes_per_value


def decode_bandwidth(config: "Molmo2Config", weight_bytes_per_param: float, context_tokens: float, tok_s: float,
                     bandwidth_gb_s: float, source: str) -> dict[str, Any]:
    """How close `tok_s` comes to the memory-bandwidth limit (weights + KV read once per token)."""
    kv_value_bytes = min(4.0, max(2.0, weight_bytes_per_param))  # int8 / NF4 weights still keep a float cache
    weights = decoder_weight_params(config) * weight_bytes_per_param
    kv = kv_bytes_per_token(config, kv_value_bytes) * context_tokens
    per_token = weights + kv
    limit_tok_s = bandwidth_gb_s * 1e9 / per_token
    return {"bytes_per_token": per_token, "weight_bytes": weights, "kv_bytes": kv, "context_tokens": context_tokens,
            "bandwidth_gb_s": bandwidth_gb_s, "bandwidth_source": source, "limit_tok_s": limit_tok_s,
            "fraction_of_limit": tok_s / limit_tok_s}


def known_gpu_bandwidth(device_name: str) -> float | None:
    for key, value in KNOWN_GPU_BANDWIDTH_GB_S.items():
        if key.lower() in device_name.lower():
            return value
    return None


def measure_copy_bandwidth(device: torch.device | str = "cpu", n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """GB/s of a device-to-same-device copy (read + write counted), best of `repeats`: the practical limit."""
    device = torch.device(device)
    source = torch.empty(n_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    del source, target
    return 2 * n_bytes / best / 1e9


__all__ = ["KNOWN_GPU_BANDWIDTH_GB_S", "RssSampler", "decode_bandwidth", "decoder_weight_params", "describe_machine",
           "known_gpu_bandwidth", "kv_bytes_per_token", "measure_copy_bandwidth", "measure_load",
           "release_freed_memory", "rss_bytes"]

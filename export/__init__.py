"""molmo_edge.export: from a PyTorch model to a bundle of ONNX graphs (+ TensorRT engines).

Modules (import the one you need; none is imported here, so `import molmo_edge.export` stays cheap):
- `exporter`   `export_bundle`: checkpoint -> bundle (what `molmo-edge export` runs)
- `onnx_export` the vit / connector / decoder graphs traced from the torch stages
- `verify`     `verify_bundle`: a bundle against the torch model, stage by stage
- `trt_engines` TensorRT profiles per graph and building a bundle's engines
- `manifest`   the versioned `BundleManifest` (pydantic) written as manifest.json
- `bundle`     `write_manifest`, `open_bundle` (refuses bundles that do not match), `is_bundle`
- `onnx_io`    what an ONNX file declares (inputs, outputs, opset, external weights)
- `quantize`   `to_fp16`, `quantize_static_int8` (QDQ), `quantize_dynamic_int8`
- `trt_ops`    `check_trt_support` / `assert_trt_compatible`: the TensorRT parser's operator table
- `tensorrt`   `build_engine` and its pure-Python helpers (profiles, build plan, timing cache)
- `tensorrt_calibrator`  INT8 entropy calibrator + calibration cache for TensorRT 10
- `tensorrt_runtime`     `TensorRTEngine`: run a serialized engine on torch CUDA tensors
"""

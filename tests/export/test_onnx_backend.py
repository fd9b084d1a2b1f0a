"""The ONNX Runtime backend on fp32 bundles: the same logits (<= 1e-3) and the same greedy answers as the
torch model on images and video, KV-cache decoding equal to re-prefilling, and the load_model path."""
from __future__ import annotations

import pytest
import torch

from .export_helpers import cached_bundle, export, sample_image, wide_checkpoint
from molmo_edge.errors import BackendUnavailableError, BundleError, ConfigError, InputError, MolmoEdgeError

ort = pytest.importorskip("onnxruntime")
ATOL = 1e-3


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint_dir, tmp_path_factory):
    wide = cached_bundle("wide-checkpoint", lambda: wide_checkpoint(tmp_path_factory.mktemp("wide_ckpt")))
    return {"tiny": tiny_checkpoint_dir, "wide": wide}


@pytest.fixture(scope="module")
def bundles(checkpoints, tmp_path_factory):
    return {name: cached_bundle(f"{name}-fp32", lambda c=ckpt: export(c, tmp_path_factory.mktemp(name) / "b"))
            for name, ckpt in checkpoints.items()}


@pytest.fixture(scope="module", params=["tiny", "wide"])
def pair(request, checkpoints, bundles):
    """(torch backend, onnx backend) of one model."""
    from molmo_edge.engine.onnx_backend import OnnxBackend
    from molmo_edge.engine.torch_backend import TorchBackend

    reference = TorchBackend.from_checkpoint(checkpoints[request.param], device="cpu")
    backend = OnnxBackend.from_bundle(bundles[request.param], device="cpu")
    yield reference, backend
    backend.close()


def _media(processor, kind: str):
    crop = processor.cfg.crop_size
    if kind == "image":
        return processor("Point to the red circle.", images=sample_image(int(crop * 2.2), int(crop * 3.1), seed=3))
    frames = [sample_image(crop, int(crop * 1.3), seed=s) for s in range(3)]
    return processor("Track the blue star.", video=(frames, [0.0, 0.5, 1.0]))


def _visual(inputs):
    if "pixel_values" in inputs:
        return inputs["pixel_values"], inputs["image_token_pooling"]
    return inputs["pixel_values_videos"], inputs["video_token_pooling"]


@pytest.mark.parametrize("kind", ["image", "video"])
def test_logits_and_greedy_answers_match_torch(pair, kind):
    from molmo_edge.engine.generation import generate

    reference, backend = pair
    inputs = _media(backend.processor, kind)
    pixels, pooling = _visual(inputs)
    ids, mm = inputs["input_ids"], inputs["mm_token_type_ids"]
    torch_tokens, onnx_tokens = reference.encode_visual(pixels, pooling), backend.encode_visual(pixels, pooling)
    # one row per <im_patch> of the prompt: all-padding pooling rows are dropped
    assert onnx_tokens.shape == torch_tokens.shape == (int((ids == backend.config.image_patch_id).sum()),
                                                       backend.hidden_size)
    assert onnx_tokens.dtype == torch.float32 and onnx_tokens.device.type == "cpu"
    assert (onnx_tokens - torch_tokens).abs().max() <= ATOL

    want, want_state = reference.prefill(ids, torch_tokens, mm)
    got, state = backend.prefill(ids, onnx_tokens, mm)
    assert got.shape == (backend.vocab_size,) and got.dtype == torch.float32
    assert (got - want).abs().max() <= ATOL
    for _ in range(6):  # decode steps on the KV cache, teacher-forced on the torch path
        token = int(want.argmax())
        want, want_state = reference.decode(token, want_state)
        got, state = backend.decode(token, state)
        assert (got - want).abs().max() <= ATOL
    assert state.length == ids.shape[1] + 6

    torch_answer = generate(reference, ids, mm, torch_tokens, max_new_tokens=24)
    onnx_answer = generate(backend, ids, mm, onnx_tokens, max_new_tokens=24)
    assert onnx_answer.token_ids == torch_answer.token_ids
    assert onnx_answer.text == torch_answer.text


def test_kv_cache_decoding_equals_prefilling_the_whole_sequence(pair):
    reference, backend = pair
    inputs = _media(backend.processor, "image")
    pixels, pooling = _visual(inputs)
    ids, mm = inputs["input_ids"], inputs["mm_token_type_ids"]
    tokens = backend.encode_visual(pixels, pooling)
    logits, state = backend.prefill(ids, tokens, mm)
    # IO binding: the cache is ONNX Runtime's own memory, handed from step to step, never numpy
    assert all(isinstance(value, ort.OrtValue) for value in state.past)
    assert state.past[0].shape() == [1, backend.config.text.num_key_value_heads, ids.shape[1],
                                     backend.config.text.head_dim]
    appended = []
    for _ in range(5):
        appended.append(int(logits.argmax()))
        logits, state = backend.decode(appended[-1], state)
    longer = torch.cat((ids, torch.tensor([appended])), dim=1)
    again, _ = backend.prefill(longer, tokens, torch.cat((mm, torch.zeros(1, 5, dtype=mm.dtype)), dim=1))
    assert (logits - again).abs().max() <= 1e-4
    # states are immutable: decoding twice from one state gives the same logits
    first, _ = backend.decode(3, state)
    second, _ = backend.decode(3, state)
    assert torch.equal(first, second)
    # extend: several tokens in one call == one by one
    chunk, chunk_state = backend.extend([5, 6, 7], state)
    one = state
    for token in (5, 6, 7):
        step, one = backend.decode(token, one)
    assert chunk_state.length == one.length and (chunk - step).abs().max() <= 1e-4


def test_text_only_prompt_and_input_errors(pair):
    reference, backend = pair
    ids, mm = backend.processor.text_prompt("How many stars are there?")
    want, _ = reference.prefill(ids, None, mm)
    got, _ = backend.prefill(ids, None, mm)
    assert (got - want).abs().max() <= ATOL
    got_empty, _ = backend.prefill(ids, torch.zeros(0, backend.hidden_size), mm)
    assert torch.equal(got, got_empty)
    inputs = _media(backend.processor, "video")
    tokens = backend.encode_visual(*_visual(inputs))
    with pytest.raises(InputError, match="<im_patch> tokens"):
        backend.prefill(inputs["input_ids"], tokens[:-1], inputs["mm_token_type_ids"])
    with pytest.raises(InputError, match="pixel_values must be"):
        backend.encode_visual(torch.zeros(1, 3, 5), torch.zeros(1, 4, dtype=torch.long))
    _, state = backend.prefill(ids, None, mm)
    with pytest.raises(InputError, match="outside the base vocabulary"):
        backend.decode(backend.vocab_size + 3, state)
    with pytest.raises(TypeError):
        backend.decode(1, object())


def test_engine_answers_like_the_torch_engine(checkpoints, bundles):
    from molmo_edge.engine.engine import Engine
    from molmo_edge.engine.loading import load_backend

    image = sample_image(120, 160, seed=9)
    with Engine(load_backend(bundles["wide"], device="cpu")) as onnx_engine, \
            Engine(load_backend(checkpoints["wide"], device="cpu")) as torch_engine:
        assert onnx_engine.backend.name == "onnx"
        got = onnx_engine.ask_image(image, "Point to the red circle.", max_new_tokens=12)
        want = torch_engine.ask_image(image, "Point to the red circle.", max_new_tokens=12)
        assert got.text == want.text and got.generation.token_ids == want.generation.token_ids
        frames = [sample_image(70, 70, seed=s) for s in range(2)]
        features = [onnx_engine.encode_frame(f) for f in frames]
        cached = onnx_engine.ask_frames(features, [0.0, 0.5], "Track all stars.", max_new_tokens=8)
        whole = onnx_engine.ask_video(frames, [0.0, 0.5], "Track all stars.", max_new_tokens=8)
        assert cached.generation.token_ids == whole.generation.token_ids
    ids, mm = onnx_engine.processor.text_prompt("hi")
    with pytest.raises(MolmoEdgeError, match="closed"):
        onnx_engine.backend.prefill(ids, None, mm)


def test_load_model_on_a_bundle_behaves_like_the_torch_model(checkpoints, bundles):
    import molmo_edge
    from molmo_edge.engine.onnx_backend import BundleModel

    torch_model = molmo_edge.load_model(checkpoints["wide"])
    model = molmo_edge.load_model(bundles["wide"])
    assert isinstance(model, BundleModel)
    inputs = _media(model.processor, "image")
    want = torch_model(**inputs).logits[:, -1:]
    out = model(**inputs)
    assert out.logits.shape == want.shape == (1, 1, model.config.text.vocab_size)
    assert (out.logits - want).abs().max() <= ATOL
    token = out.logits[0, -1].argmax()[None, None]
    step = model(token, past_key_values=out.past_key_values)
    torch_step = torch_model(token, past_key_values=torch_model(**inputs).past_key_values, logits_to_keep=1)
    assert (step.logits - torch_step.logits).abs().max() <= ATOL
    want_ids = torch_model.generate(**inputs, max_new_tokens=10)
    got_ids = model.generate(**inputs, max_new_tokens=10)
    assert torch.equal(got_ids, want_ids)
    with pytest.raises(ConfigError, match="precision was fixed"):
        molmo_edge.load_model(bundles["wide"], dtype="float16")
    with pytest.raises(InputError, match="one sequence"):
        model(torch.zeros(2, 3, dtype=torch.long))
    model.close()


def test_execution_providers_are_chosen_from_what_is_installed():
    from molmo_edge.engine.onnx_backend import CPU_EP, CUDA_EP, TENSORRT_EP, choose_providers

    everything = [TENSORRT_EP, CUDA_EP, CPU_EP]
    assert choose_providers(None, everything) == [TENSORRT_EP, CUDA_EP, CPU_EP]
    assert choose_providers(None, [CUDA_EP, CPU_EP]) == [CUDA_EP, CPU_EP]
    assert choose_providers(None, [CPU_EP]) == [CPU_EP]
    assert choose_providers("cpu", everything) == [CPU_EP]
    assert choose_providers("cuda:1", [CUDA_EP, CPU_EP]) == [CUDA_EP, CPU_EP]
    assert choose_providers(None, everything, requested=[CUDA_EP]) == [CUDA_EP, CPU_EP]
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        choose_providers("cuda", [CPU_EP])
    with pytest.raises(BackendUnavailableError, match="not installed"):
        choose_providers(None, [CPU_EP], requested=[TENSORRT_EP])
    with pytest.raises(ConfigError):
        choose_providers("mps", everything)


def test_session_options_are_applied(bundles):
    from molmo_edge.engine.onnx_backend import OnnxBackend, OnnxOptions

    options = OnnxOptions(graph_optimization_level="basic", intra_op_threads=1, verify_hashes=False, spin_wait=False)
    with OnnxBackend.from_bundle(bundles["tiny"], device="cpu", options=options) as backend:
        session = backend.graphs["decoder"].session
        assert session.get_providers() == ["CPUExecutionProvider"]
        assert session.get_session_options().intra_op_num_threads == 1
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert backend.providers == ["CPUExecutionProvider"]
        ids, mm = backend.processor.text_prompt("hello")
        logits, _ = backend.prefill(ids, None, mm)
        assert torch.isfinite(logits).all()


def test_only_the_decoder_spins_between_runs(bundles):
    """The ViT's and connector's pool threads must not busy-wait: they would take the cores the next
    graph needs (per-session pools); the decoder's do, for the next token, unless told not to."""
    from molmo_edge.engine.onnx_backend import OnnxBackend, OnnxOptions

    def spinning(options):
        with OnnxBackend.from_bundle(bundles["tiny"], device="cpu", options=options) as backend:
            return {name: graph.session.get_session_options().get_session_config_entry(
                "session.intra_op.allow_spinning") for name, graph in backend.graphs.items()}

    assert spinning(OnnxOptions(intra_op_threads=2, verify_hashes=False)) == {"vit": "0", "connector": "0",
                                                                              "decoder": "1"}
    assert set(spinning(OnnxOptions(intra_op_threads=2, verify_hashes=False, spin_wait=False)).values()) == {"0"}


@pytest.mark.parametrize("damage", ["flip_byte", "delete_graph", "extra_graph", "edit_manifest"])
def test_tampered_or_incomplete_bundles_are_refused(bundles, tmp_path, damage):
    import json
    import shutil

    from molmo_edge.engine.loading import load_backend

    folder = tmp_path / "copy"
    shutil.copytree(bundles["tiny"], folder)
    if damage == "flip_byte":
        data = bytearray((folder / "decoder.onnx").read_bytes())
        data[len(data) // 2] ^= 0x01
        (folder / "decoder.onnx").write_bytes(bytes(data))
        expected = "decoder.onnx does not match its sha256"
    elif damage == "delete_graph":
        (folder / "connector.onnx").unlink()
        expected = "connector.onnx is listed in the manifest but missing"
    elif damage == "extra_graph":
        shutil.copy(folder / "vit.onnx", folder / "vit_old.onnx")
        expected = "vit_old.onnx is a graph/engine file that the manifest does not list"
    else:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["vit.onnx"]["bytes"] += 1
        (folder / "manifest.json").write_text(json.dumps(manifest))
        expected = "vit.onnx has .* bytes but the manifest says"
    with pytest.raises(BundleError, match=expected):
        load_backend(folder, device="cpu")
    # the original is untouched and still loads
    with load_backend(bundles["tiny"], device="cpu") as backend:
        assert backend.name == "onnx"


def test_a_decoder_with_its_outputs_in_another_order_is_refused(bundles, tmp_path):
    """The decode step takes the decoder's outputs by position (logits, then present k/v per layer),
    so a graph that lists them in another order must be refused at load, not decoded from."""
    import shutil

    import onnx

    from molmo_edge.engine.onnx_backend import OnnxBackend, OnnxOptions
    from molmo_edge.export.bundle import open_bundle, write_manifest
    from molmo_edge.export.onnx_io import describe_graph

    folder = tmp_path / "reordered"
    shutil.copytree(bundles["tiny"], folder)
    model = onnx.load(str(folder / "decoder.onnx"))
    outputs = list(model.graph.output)
    outputs[1], outputs[2] = outputs[2], outputs[1]  # present_key_0 <-> present_value_0
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    onnx.save(model, str(folder / "decoder.onnx"))
    manifest = open_bundle(folder, verify=False).manifest
    graphs = dict(manifest.graphs)
    graphs["decoder"] = describe_graph(folder / "decoder.onnx").model_copy(update={"file": graphs["decoder"].file})
    write_manifest(folder, manifest.model_copy(update={"graphs": graphs}))
    with pytest.raises(BundleError, match="decoder outputs .* do not match the model config"):
        OnnxBackend.from_bundle(folder, device="cpu", options=OnnxOptions(verify_hashes=False))

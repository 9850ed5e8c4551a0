"""The model registry, checkpoints and export."""

import huggingface_hub.constants
import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch

from prune.export import INPUT_NAME, OUTPUT_NAME, export_onnx, export_program
from prune.models import MODELS, create_model, list_models, save_weights
from prune.models.decoder import MergedDecoder, MLPDecoder
from prune.models.weights import cached_backbone_file
from runner.errors import EdgesegError

from helpers.hub_cache import fake_hub_cache

SIZE = 64


def _eval_output(model: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def small_model():
    """The cheapest registry model, 4 classes, shared by the tests that only read it."""
    return create_model("efficientvit-seg-b0", num_classes=4)


@pytest.mark.parametrize("name", list_models())
def test_forward_gives_quarter_resolution_logits_from_a_decoder_sized_by_feature_info(name):
    model = create_model(name, num_classes=5)
    assert _eval_output(model).shape == (1, 5, SIZE // 4, SIZE // 4)
    assert [proj.in_channels for proj in model.decoder.proj] == model.backbone.feature_info.channels()
    assert model.decoder.classifier.in_channels == MODELS[name].embed_dim


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(EdgesegError) as err:
        create_model("segformer-b9")
    assert "segformer-b9" in err.value.problem
    assert all(name in err.value.fix for name in list_models())


def test_none_kwargs_keep_model_defaults():
    model = create_model("efficientvit-seg-b0", num_classes=4, embed_dim=None, dropout=None, drop_path_rate=None)
    assert model.decoder.classifier.in_channels == MODELS["efficientvit-seg-b0"].embed_dim
    assert model.decoder.dropout.p == 0.1


def test_decoder_with_per_stage_widths_reads_them_from_its_modules():
    decoder = MLPDecoder([8, 16, 24], num_classes=3, embed_dim=[4, 6, 2], fuse_dim=5).eval()
    feats = [torch.randn(1, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate([8, 16, 24])]
    assert decoder(feats).shape == (1, 3, 16, 16)
    assert decoder.fuse[0].in_channels == 12


def test_merged_decoder_gives_the_decoders_outputs_with_one_conv_per_stage():
    """What benchmarks time ONNX Runtime and PyTorch on, in place of compile's decoder rewrite."""
    torch.manual_seed(0)
    decoder = MLPDecoder([8, 16, 24], num_classes=3, embed_dim=[4, 6, 2], fuse_dim=5).eval()
    decoder.fuse[1].running_mean.uniform_(-1, 1)  # a BN that is not the identity stays after the sum
    features = [torch.randn(1, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate([8, 16, 24])]
    merged = MergedDecoder(decoder).eval()
    with torch.no_grad():
        expected, got = decoder(features), merged(features)
    assert [m.weight.shape[:2] for m in merged.stages] == [(5, 8), (5, 16), (5, 24)]
    assert got.shape == expected.shape == (1, 3, 16, 16)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_round_trip(tmp_path, small_model, suffix):
    path = save_weights(small_model, tmp_path / f"ckpt{suffix}")
    loaded = create_model("efficientvit-seg-b0", num_classes=4, weights=path)
    assert torch.equal(_eval_output(loaded), _eval_output(small_model))


def test_weights_wrapped_by_a_trainer_load(tmp_path, small_model):
    torch.save({"epoch": 3, "model": small_model.state_dict()}, tmp_path / "train.pth")
    loaded = create_model("efficientvit-seg-b0", num_classes=4, weights=tmp_path / "train.pth")
    assert torch.equal(_eval_output(loaded), _eval_output(small_model))


def test_weights_for_another_class_count_name_the_first_mismatched_tensor(tmp_path, small_model):
    path = save_weights(small_model, tmp_path / "c4.safetensors")
    with pytest.raises(EdgesegError) as err:
        create_model("efficientvit-seg-b0", num_classes=7, weights=path)
    assert "'decoder.classifier.weight' has shape [4, 128, 1, 1] in the checkpoint but [7, 128, 1, 1]" in str(err.value)


def test_weights_missing_or_unexpected_tensor_is_named(tmp_path, small_model):
    state = small_model.state_dict()
    first = next(iter(state))
    torch.save({k: v for k, v in state.items() if k != first}, tmp_path / "missing.pt")
    with pytest.raises(EdgesegError, match=f"tensor '{first}' .* is missing from the checkpoint"):
        create_model("efficientvit-seg-b0", num_classes=4, weights=tmp_path / "missing.pt")
    torch.save({**state, "head.extra": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(EdgesegError, match="tensor 'head.extra' in the checkpoint is not in the model"):
        create_model("efficientvit-seg-b0", num_classes=4, weights=tmp_path / "extra.pt")


def test_unreadable_or_absent_weights_file_is_an_edgeseg_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EdgesegError, match="could not be read"):
        create_model("efficientvit-seg-b0", weights=tmp_path / "junk.pt")
    with pytest.raises(EdgesegError, match="does not exist"):
        create_model("efficientvit-seg-b0", weights=tmp_path / "absent.safetensors")


def test_pretrained_backbone_comes_only_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(EdgesegError) as err:
        create_model("efficientvit-seg-b0", pretrained_backbone=True)
    assert "not in" in err.value.problem and "--weights" in err.value.fix

    torch.manual_seed(1)
    classifier = timm.create_model("efficientvit_b0")  # stands in for timm's ImageNet weights
    repo = timm.models.get_pretrained_cfg("efficientvit_b0").hf_hub_id
    fake_hub_cache(tmp_path, repo, {k: v.contiguous() for k, v in classifier.state_dict().items()})
    assert cached_backbone_file("efficientvit_b0").name == "model.safetensors"
    model = create_model("efficientvit-seg-b0", pretrained_backbone=True)
    name = "stages.1.blocks.0.main.inverted_conv.conv.weight"
    assert torch.equal(model.backbone.state_dict()[name.replace(".", "_", 1)], classifier.state_dict()[name])


def test_onnx_export_matches_pytorch(tmp_path):
    model = create_model("segformer-b0", num_classes=3).train()
    path = export_onnx(model, SIZE, tmp_path / "model.onnx")
    assert model.training  # the caller's mode is restored
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert session.get_inputs()[0].shape == [1, 3, SIZE, SIZE]
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    np.testing.assert_allclose(actual, _eval_output(model, seed=5).numpy(), atol=1e-4, rtol=1e-3)


def test_onnx_export_imports_into_tvm(tmp_path, small_model):
    """EfficientViT's export computes its pads; compile's import folds them (TVM rejects them)."""
    from compile.frontend import load_model

    imported = load_model(export_onnx(small_model, SIZE, tmp_path / "m.onnx"), None, tmp_path / "w")
    assert imported.inputs[0].shape == (1, 3, SIZE, SIZE)


def test_torch_export_program_round_trips(tmp_path, small_model):
    path = export_program(small_model, SIZE, tmp_path / "model.pt2")
    program = torch.export.load(str(path))
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(program.module()(x), _eval_output(small_model))

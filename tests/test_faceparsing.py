"""The face-parsing.PyTorch BiSeNet (79999_iter.pth): its state dict, loading, label order, one loader for
both kinds of parser file, and scripts/make_mask.py. Offline: the weights used here are random ones with the
real file's names and shapes."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import load_script
from pixelface.data.masks import LABEL_ID, PALETTE, to_celebamask
from pixelface.evaluation.faceparsing import INPUT_SIZE, BiSeNet, load_any_parser, load_faceparsing
from pixelface.evaluation.parser import FaceParser, save_parser

# A few entries of the state dict of 79999_iter.pth, name -> shape, from the model definition of
# zllrunning/face-parsing.PyTorch (model.py and resnet.py): ResNet-18 stem and blocks, the attention
# refinement modules, the feature fusion module and the three output heads (19 classes).
REFERENCE_SHAPES = {
    "cp.resnet.conv1.weight": (64, 3, 7, 7),
    "cp.resnet.bn1.running_var": (64,),
    "cp.resnet.layer1.0.conv1.weight": (64, 64, 3, 3),
    "cp.resnet.layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "cp.resnet.layer2.0.downsample.1.running_mean": (128,),
    "cp.resnet.layer4.1.bn2.weight": (512,),
    "cp.arm16.conv.conv.weight": (128, 256, 3, 3),
    "cp.arm32.conv_atten.weight": (128, 128, 1, 1),
    "cp.arm32.bn_atten.bias": (128,),
    "cp.conv_head32.conv.weight": (128, 128, 3, 3),
    "cp.conv_head16.bn.running_var": (128,),
    "cp.conv_avg.conv.weight": (128, 512, 1, 1),
    "ffm.convblk.conv.weight": (256, 256, 1, 1),
    "ffm.conv1.weight": (64, 256, 1, 1),
    "ffm.conv2.weight": (256, 64, 1, 1),
    "conv_out.conv.conv.weight": (256, 256, 3, 3),
    "conv_out.conv_out.weight": (19, 256, 1, 1),
    "conv_out16.conv.conv.weight": (64, 128, 3, 3),
    "conv_out16.conv_out.weight": (19, 64, 1, 1),
    "conv_out32.conv_out.weight": (19, 64, 1, 1),
}
# Trainable parameters of the reference BiSeNet(n_classes=19), summed layer by layer from its definition
# (convolutions have no bias; BatchNorm counts weight + bias):
#   ResNet-18 without its fc layer                               11,176,512  (torchvision's 11,689,512 - 513,000)
#   arm16 311,808 + arm32 606,720 + conv_head32/16 2 x 147,712 + conv_avg 65,792 = 1,279,744
#   ffm: convblk 66,048 + conv1 16,384 + conv2 16,384                 98,816
#   conv_out: 3x3 256->256 + BN 590,336 + 1x1 256->19 4,864           595,200
#   conv_out16, conv_out32: 3x3 128->64 + BN 73,856 + 1x1 64->19 1,216, each 75,072
#   total                                                       13,300,416  (~53 MB as float32, the file's size)
REFERENCE_PARAMETERS = 13_300_416


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the real file's names and shapes (BatchNorm variances kept positive)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in BiSeNet().state_dict().items():
        if not value.is_floating_point():
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)
        else:
            state[key] = 0.1 * torch.randn(value.shape, generator=generator)
    return state


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """79999_iter.pth-like file of random weights, and its state dict."""
    state = random_state()
    path = tmp_path_factory.mktemp("faceparsing") / "79999_iter.pth"
    torch.save(state, path)
    return path, state


def test_state_dict_has_the_names_and_shapes_of_the_real_file():
    net = BiSeNet()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    for key, shape in REFERENCE_SHAPES.items():
        assert shapes.get(key) == shape, key
    assert sum(p.numel() for p in net.parameters()) == REFERENCE_PARAMETERS
    # Constants of the predictor stay out of the state dict, or the file would not load strictly.
    assert not any(k in shapes for k in ("mean", "std", "to_celebamask"))


def test_forward_gives_main_and_auxiliary_scores_at_input_size():
    net = BiSeNet().eval()
    with torch.no_grad():
        outputs = net(torch.randn(1, 3, 64, 96))
        main = net.main_logits(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outputs] == [(1, 19, 64, 96)] * 3 and main.shape == (1, 19, 64, 96)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_loads_a_plain_or_dataparallel_state_dict_and_predicts(weights, tmp_path, prefix):
    path, state = weights
    if prefix:
        path = tmp_path / "dataparallel.pth"
        torch.save({prefix + k: v for k, v in state.items()}, path)
    net = load_faceparsing(path)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    labels = net.predict(images)
    assert labels.shape == (2, 64, 64) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) <= 18


def test_file_without_batch_counters_loads(weights, tmp_path):
    """Files saved before PyTorch 0.4.1 have no num_batches_tracked; they do not matter for predictions."""
    _, state = weights
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(load_faceparsing(path).predict(images), load_faceparsing(weights[0]).predict(images))


def forced_scores(classes: torch.Tensor):
    """A stand-in for BiSeNet.main_logits whose scores make face-parsing class `classes[y, x]` win."""
    def main_logits(x):
        assert tuple(x.shape[-2:]) == (INPUT_SIZE, INPUT_SIZE)      # predict runs the network at 512 px
        scores = torch.nn.functional.one_hot(classes, 19).permute(2, 0, 1).float()
        return scores[None].expand(x.shape[0], -1, -1, -1)
    return main_logits


def test_predict_maps_face_parsing_ids_to_celebamask_ids(monkeypatch):
    net = BiSeNet().eval()
    classes = torch.full((INPUT_SIZE, INPUT_SIZE), 17)                  # face-parsing hair on top
    classes[INPUT_SIZE // 2:] = 14                                      # face-parsing neck below
    monkeypatch.setattr(net, "main_logits", forced_scores(classes))
    labels = net.predict(torch.zeros(1, 3, 64, 64))[0]
    assert (labels[:32] == LABEL_ID["hair"]).all() and LABEL_ID["hair"] == 13
    assert (labels[32:] == LABEL_ID["neck"]).all() and LABEL_ID["neck"] == 17


def test_predict_remaps_every_class_as_masks_to_celebamask_does(monkeypatch):
    net = BiSeNet().eval()
    stripes = (torch.arange(INPUT_SIZE) * 19 // INPUT_SIZE).expand(INPUT_SIZE, -1).contiguous()
    monkeypatch.setattr(net, "main_logits", forced_scores(stripes))
    labels = net.predict(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))[0].numpy()
    np.testing.assert_array_equal(labels, to_celebamask(stripes.numpy(), "faceparsing"))


def one_line_error(call, *args) -> str:
    with pytest.raises(ValueError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_wrong_file_is_one_line_naming_the_file_and_the_key(weights, tmp_path):
    _, state = weights
    foreign = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(3)}, foreign)
    message = one_line_error(load_faceparsing, foreign)
    assert str(foreign) in message and "missing key 'cp.resnet.conv1.weight'" in message
    assert "(64, 3, 7, 7)" in message

    wrong_shape = tmp_path / "18classes.pth"
    torch.save({**state, "conv_out.conv_out.weight": torch.zeros(18, 256, 1, 1)}, wrong_shape)
    message = one_line_error(load_faceparsing, wrong_shape)
    assert "'conv_out.conv_out.weight' has shape (18, 256, 1, 1), expected (19, 256, 1, 1)" in message

    extra = tmp_path / "extra.pth"
    torch.save({**state, "sp.conv1.conv.weight": torch.zeros(64, 3, 7, 7)}, extra)
    assert "unexpected key 'sp.conv1.conv.weight'" in one_line_error(load_faceparsing, extra)

    text = tmp_path / "notes.pth"
    text.write_text("hello")
    assert f"{text} cannot be read" in one_line_error(load_faceparsing, text)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_faceparsing(tmp_path / "absent.pth")


def test_one_loader_reads_both_kinds_of_parser_file(weights, tmp_path):
    ours = tmp_path / "parser.pt"
    small = FaceParser(width=4, depth=2, image_size=16)
    save_parser(small, ours, {"test_miou": 0.5}, {"name": "toy", "root": "data/toy"})
    loaded = load_any_parser(ours)
    assert isinstance(loaded, FaceParser) and not loaded.training
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.predict(images), small.eval().predict(images))
    assert isinstance(load_any_parser(weights[0]), BiSeNet)

    checkpoint = tmp_path / "ckpt.pt"
    torch.save({"format": "pixelface-checkpoint", "config": {}}, checkpoint)
    message = one_line_error(load_any_parser, checkpoint)
    assert str(checkpoint) in message and "'pixelface-checkpoint'" in message and "79999_iter.pth" in message
    foreign = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    message = one_line_error(load_any_parser, foreign)
    assert "is neither a face parser written by scripts/train_parser.py nor" in message
    assert "missing key 'cp.resnet.conv1.weight'" in message


# --------------------------------------------------------------------------------------------- make_mask.py
def photo(path, width=40, height=30):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_make_mask_writes_a_palette_mask_and_an_overlay(weights, tmp_path, capsys):
    """--align off: the photo's centred square, as before faces were aligned (tests/test_face_alignment.py and
    test_bad_inputs.py cover the aligned crop)."""
    script = load_script("make_mask")
    image = photo(tmp_path / "face.png")
    out = tmp_path / "masks" / "face_mask.png"
    assert script.main(["--image", str(image), "--out", str(out), "--parser", str(weights[0]), "--align", "off"]) == 0
    overlay = tmp_path / "masks" / "face_mask_overlay.png"
    mask = np.asarray(Image.open(out))
    assert mask.shape == (30, 30, 3)                                    # the photo's centred square
    assert all((PALETTE == colour).all(1).any() for colour in np.unique(mask.reshape(-1, 3), axis=0))
    crop = np.asarray(Image.open(image))[:, 5:35]
    expected = np.round(0.5 * crop.astype(np.float32) + 0.5 * mask.astype(np.float32)).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(overlay)), expected)
    assert f"wrote {out} (30x30" in capsys.readouterr().out

    other = tmp_path / "check.png"
    assert script.main(["--image", str(image), "--out", str(out), "--parser", str(weights[0]), "--size", "16",
                        "--overlay", str(other), "--force", "--align", "off"]) == 0
    assert Image.open(out).size == (16, 16) and Image.open(other).size == (16, 16)


def test_make_mask_parses_a_large_size_at_its_working_size(weights, tmp_path, capsys):
    """--size beyond make_mask.MAX_PARSE_SIDE: the photo is parsed (and the overlay drawn) at that side, and only the
    label map is resized up, so memory does not grow with --size."""
    script = load_script("make_mask")
    image = photo(tmp_path / "face.png")
    out = tmp_path / "mask.png"
    assert script.main(["--image", str(image), "--out", str(out), "--parser", str(weights[0]), "--size", "2048",
                        "--align", "off"]) == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == (2048, 2048, 3) and Image.open(tmp_path / "mask_overlay.png").size == (1024, 1024)
    assert all((PALETTE == colour).all(1).any() for colour in np.unique(mask.reshape(-1, 3), axis=0))


def test_make_mask_keeps_existing_files_without_force(weights, tmp_path, capsys):
    script = load_script("make_mask")
    image = photo(tmp_path / "face.png")
    out = tmp_path / "mask.png"
    out.write_bytes(b"mine")
    code = script.main(["--image", str(image), "--out", str(out), "--parser", str(weights[0]), "--align", "off"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "exist already" in errors[0] and "--force" in errors[0]
    assert out.read_bytes() == b"mine" and not (tmp_path / "mask_overlay.png").exists()

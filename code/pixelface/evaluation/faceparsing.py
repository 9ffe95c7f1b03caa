"""The BiSeNet face parser of face-parsing.PyTorch (weights `79999_iter.pth`), rebuilt in plain PyTorch.

Many face-editing users already have that file; with this module it predicts the mask of their own photo in
place of this project's small U-Net (pixelface.evaluation.parser). Parameter names and shapes are exactly those of the
file's state dict, so it loads as it is (also when saved from nn.DataParallel, keys prefixed `module.`).
Nothing is downloaded: the ResNet-18 backbone, which the original fills with ImageNet weights from the
internet when it is built, starts empty here and gets every weight from the file.

The network: a ResNet-18 context path whose 1/16 and 1/32 features are refined by channel attention and
carried up to 1/8, fused with the plain 1/8 features (which stand in for BiSeNet's spatial path), and a
19-class head; two auxiliary heads on the context features served training only. It numbers the classes in
face-parsing order (masks.FACE_PARSING_LABELS); `predict` returns CelebAMask-HQ ids, as FaceParser.predict.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixelface.data.masks import FACE_PARSING_TO_CELEBAMASK, NUM_CLASSES
from pixelface.evaluation.parser import FORMAT as PARSER_FORMAT, FaceParser

INPUT_SIZE = 512            # the resolution the network was trained and is run at
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREDICT_BATCH = 4           # images per forward pass in predict: 512 px activations are large
WEIGHTS_NAME = "face-parsing.PyTorch BiSeNet weights (79999_iter.pth)"
OURS_NAME = "face parser written by scripts/train_parser.py"


# ---------------------------------------------------------------------------------------------------------------
# The network. Attribute names follow the original's, because they are the keys of its state dict.


class ConvBNReLU(nn.Module):
    """Convolution without bias, BatchNorm, ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class ResidualBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions plus a shortcut, projected (1x1 conv + BN) when the
    block changes the width or the resolution."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if c_in != c_out or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(c_in, c_out, stride), ResidualBlock(c_out, c_out))


class ResNet18(nn.Module):
    """ResNet-18 without its classifier -> the features at 1/8, 1/16 and 1/32 of the input size."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    """A 3x3 conv block whose channels are reweighed by a gate computed from their global average."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = ConvBNReLU(c_in, c_out)
        self.conv_atten = nn.Conv2d(c_out, c_out, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * gate


class ContextPath(nn.Module):
    """The backbone plus the top-down path: 1/32 features (with the global context added) are refined,
    brought to 1/16, added to the refined 1/16 features, and brought to 1/8.
    -> (backbone 1/8 features (128 ch), context at 1/8 (128 ch), context at 1/16 (128 ch))."""

    def __init__(self):
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))      # (B,128,1,1), broadcast below
        up32 = F.interpolate(self.arm32(feat32) + context, size=feat16.shape[-2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, size=feat8.shape[-2:], mode="nearest")
        return feat8, self.conv_head16(up16), up32


class FeatureFusion(nn.Module):
    """Concatenate two feature maps, mix them with a 1x1 conv block, and add a channel-gated copy."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.convblk = ConvBNReLU(c_in, c_out, kernel=1)
        self.conv1 = nn.Conv2d(c_out, c_out // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out // 4, c_out, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat + feat * gate


class SegmentationHead(nn.Module):
    """A 3x3 conv block, then 1x1 class scores (no bias)."""

    def __init__(self, c_in: int, c_mid: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(c_in, c_mid)
        self.conv_out = nn.Conv2d(c_mid, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


def _upsample(logits: torch.Tensor, size) -> torch.Tensor:
    # align_corners=True, as the network was trained with.
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


class BiSeNet(nn.Module):
    """The face-parsing.PyTorch network: (B,3,H,W) ImageNet-normalised RGB, H and W divisible by 32 ->
    class scores in face-parsing order. `predict` wraps it with the interface of FaceParser.predict."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = SegmentationHead(256, 256, num_classes)
        self.conv_out16 = SegmentationHead(128, 64, num_classes)    # auxiliary heads: training only,
        self.conv_out32 = SegmentationHead(128, 64, num_classes)    # but their weights are in the file
        # Not saved (persistent=False), so the state dict stays exactly the file's.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("to_celebamask", torch.as_tensor(FACE_PARSING_TO_CELEBAMASK, dtype=torch.int64),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (main, auxiliary 1/8, auxiliary 1/16) scores, each (B,num_classes,H,W)."""
        feat8, context8, context16 = self.cp(x)
        size = x.shape[-2:]
        return (_upsample(self.conv_out(self.ffm(feat8, context8)), size),
                _upsample(self.conv_out16(context8), size), _upsample(self.conv_out32(context16), size))

    def main_logits(self, x: torch.Tensor) -> torch.Tensor:
        """forward's first output alone, without spending time on the auxiliary heads."""
        feat8, context8, _ = self.cp(x)
        return _upsample(self.conv_out(self.ffm(feat8, context8)), x.shape[-2:])

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) images in [-1,1] -> the network's input: INPUT_SIZE px, ImageNet mean/std. Shrinking is
        antialiased, as the original's PIL bilinear resize is."""
        x = (images + 1.0) / 2.0
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > INPUT_SIZE or x.shape[-2] > INPUT_SIZE)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) images in [-1,1] of any size -> (B,H,W) int64 CelebAMask-HQ labels, parsed at 512 px."""
        was_training = self.training
        self.eval()
        device = self.mean.device
        answers = []
        for chunk in images.split(PREDICT_BATCH):
            labels = self.main_logits(self.normalise(chunk.to(device, torch.float32))).argmax(1)
            if tuple(labels.shape[-2:]) != tuple(images.shape[-2:]):
                labels = F.interpolate(labels[:, None].float(), size=images.shape[-2:], mode="nearest")[:, 0].long()
            answers.append(self.to_celebamask[labels])
        self.train(was_training)
        return torch.cat(answers)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def state_dict_problem(state, expected: dict[str, torch.Tensor]) -> str | None:
    """Why `state` (prefix already stripped) cannot be loaded into a network with state dict `expected`,
    naming the first offending key, or None when it fits. BatchNorm's num_batches_tracked counters may be
    absent (files from PyTorch before 0.4.1 lack them; they do not change a prediction)."""
    if not isinstance(state, dict) or not state:
        return f"expected a non-empty dict of tensors, got {type(state).__name__}"
    for key, want in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            return f"missing key {key!r} (expected a tensor of shape {_shape(want.shape)})"
        got = state[key]
        if not isinstance(got, torch.Tensor):
            return f"key {key!r} holds a {type(got).__name__}, expected a tensor of shape {_shape(want.shape)}"
        if got.shape != want.shape:
            return f"key {key!r} has shape {_shape(got.shape)}, expected {_shape(want.shape)}"
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        return f"unexpected key {unexpected[0]!r} ({len(unexpected)} in all; expected keys like 'cp.resnet.conv1.weight')"
    return None


def _strip_prefix(state):
    """The keys of a network saved from nn.DataParallel start with 'module.': drop it when all do."""
    if isinstance(state, dict) and state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _read(path: Path, what: str):
    """torch.load with weights_only (no pickled code runs); one-line errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or corrupt files all land here
        reason = (str(e).strip().splitlines() or ["empty or truncated file"])[0]
        raise ValueError(f"{what} {path} cannot be read ({type(e).__name__}: {reason})") from None


def bisenet_from_state(state, device, path: Path, not_what: str) -> BiSeNet:
    """A BiSeNet in eval mode holding `state`; ValueError '<path> <not_what>: <first offending key>' when
    the dict does not fit."""
    net = BiSeNet()
    state = _strip_prefix(state)
    problem = state_dict_problem(state, net.state_dict())
    if problem:
        raise ValueError(f"{path} {not_what}: {problem}")
    net.load_state_dict(state, strict=False)   # strict checks done above; strict=False lets counters be absent
    return net.to(device).eval().requires_grad_(False)


def load_faceparsing(path: str | Path, device="cpu") -> BiSeNet:
    """The BiSeNet of face-parsing.PyTorch in eval mode from its weights file (79999_iter.pth: a plain
    state dict, or one saved from nn.DataParallel)."""
    path = Path(path)
    return bisenet_from_state(_read(path, WEIGHTS_NAME), device, path, f"is not {WEIGHTS_NAME}")


def _our_parser(data: dict, device, path: Path) -> FaceParser:
    """What parser.load_parser builds, from a checkpoint already read."""
    try:
        parser = FaceParser(**data["arch"])
        parser.load_state_dict(data["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{OURS_NAME} {path} is damaged ({type(e).__name__}: {reason})") from None
    return parser.to(device).eval().requires_grad_(False)


def load_any_parser(path: str | Path, device="cpu") -> FaceParser | BiSeNet:
    """Either kind of face parser file, read once: this project's (pixelface.evaluation.parser.save_parser) or
    face-parsing.PyTorch's 79999_iter.pth. Both answer .predict((B,3,S,S) in [-1,1]) -> (B,S,S) CelebAMask-HQ
    labels. A file that is neither is a one-line ValueError naming it."""
    path = Path(path)
    data = _read(path, "face parser")
    if isinstance(data, dict) and data.get("format") == PARSER_FORMAT:
        return _our_parser(data, device, path)
    if isinstance(data, dict) and isinstance(data.get("format"), str):
        raise ValueError(f"{path} is a {data['format']!r} file, neither a {OURS_NAME} nor {WEIGHTS_NAME}")
    return bisenet_from_state(data, device, path, f"is neither a {OURS_NAME} nor {WEIGHTS_NAME}")

"""Feature extractors: images in [-1,1] (B,3,H,W) -> (B,D) float32 features on the CPU, each with a
`name` that identifies the exact network (it keys the real-statistics cache)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from pixelface.core.config import project_home
from pixelface.data.images import to_uint8
from pixelface.evaluation.parser import load_parser


INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights a metric needs are not on this machine (nothing is ever downloaded)."""


def inception_weight_paths(path: str | Path | None = None) -> list[Path]:
    """Where the Inception weights are looked for: `path` alone when given, else the project home's models/ and
    the torch hub cache (where torch-fidelity itself would have stored its download)."""
    if path is not None:
        return [Path(path).expanduser()]
    return [project_home() / "models" / INCEPTION_FILE, Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE]


def find_inception_weights(path: str | Path | None = None) -> Path:
    """The Inception weights file, or MissingWeightsError saying where to put it. torch-fidelity would try to
    download it from GitHub (hanging without network), so the file is found here first."""
    candidates = inception_weight_paths(path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MissingWeightsError(
        f"FID/KID need torch-fidelity's Inception-v3 weights ({INCEPTION_FILE}), not found at "
        f"{' or '.join(str(c) for c in candidates)}. Nothing is downloaded here: fetch {INCEPTION_URL} once and "
        f"put it at {candidates[0]}" + ("" if path is not None else " (or pass its path)")
        + ". The CLIP-space distance fid_clip needs no extra weights.")


class InceptionExtractor:
    """torch-fidelity's 'inception-v3-compat' (the TF-FID Inception): 2048-d pool features of uint8 images
    resized to 299 inside the network, as torch-fidelity computes FID and KID."""

    name = "inception-v3-compat"

    def __init__(self, weights_path: str | Path | None = None, device="cpu"):
        path = find_inception_weights(weights_path)
        # torch-fidelity loads the file with weights_only=False; make sure it is plain tensors before it does.
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"Inception weights {path} cannot be read as a state dict "
                             f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
        # Imported here: torch-fidelity takes seconds to import and only FID/KID need it.
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        self.device = torch.device(device)
        self.net = FeatureExtractorInceptionV3(self.name, ["2048"], feature_extractor_weights_path=str(path))
        self.net.to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(to_uint8(images).to(self.device))[0].float().cpu()


def module_fingerprint(module: torch.nn.Module, length: int = 10) -> str:
    """Short sha1 of a module's parameters and buffers: two CLIPs share cached statistics only if equal."""
    h = hashlib.sha1()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


class ClipImageExtractor:
    """Unit-length image embeddings of the configured CLIP (TextEncoder.encode_image with CLIP's own input
    normalisation); needs no weights beyond those the generator already uses, so it always works offline."""

    def __init__(self, text_encoder, label: str):
        self.encoder = text_encoder
        self.name = f"clip-{label}-{module_fingerprint(text_encoder.clip.visual)}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        emb = self.encoder.encode_image(images.to(self.encoder.device, torch.float32), normalize=True)
        return F.normalize(emb.float(), dim=-1).cpu()


class ParserExtractor:
    """Level-averaged activations of the dataset's face parser (FaceParser.embed): a feature space trained on
    real faces only, independent of the generator and of the CLIP its loss uses."""

    def __init__(self, parser_path: Path, device):
        self.parser = load_parser(parser_path, device)
        self.name = f"parser-{module_fingerprint(self.parser)}"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.parser.embed(images).float().cpu()

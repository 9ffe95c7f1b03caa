"""Per-image measures: scripts/manipulate.py reports them for each reconstruction and edit; LPIPS also
serves the diversity metric and the inversion loss."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pixelface.data.images import to_uint8


LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet, which lpips(net='alex') loads

def lpips_network(device):
    """lpips' AlexNet LPIPS (frozen) when the package and the AlexNet weights in the torch hub cache are both
    present (then nothing is downloaded), else None. Diversity here and the inversion loss in editing use it."""
    try:
        import lpips
    except ImportError:
        return None
    if not (Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILE).is_file():
        return None
    return lpips.LPIPS(net="alex", verbose=False).to(device).eval().requires_grad_(False)


@torch.no_grad()
def lpips_diversity(net, images: torch.Tensor, device) -> float:
    """images (G,S,3,H,W) in [-1,1] -> mean LPIPS over the pairs of samples within each group."""
    s = images.shape[1]
    distances = [net(images[:, i].to(device), images[:, j].to(device)).flatten().cpu()
                 for i in range(s) for j in range(i + 1, s)]
    return float(torch.stack(distances).mean())


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB between two images in [-1,1], measured on their 8-bit renderings."""
    mse = (to_uint8(image).float() - to_uint8(reference).float()).square().mean()
    return float("inf") if mse == 0 else float(10 * torch.log10(255.0 ** 2 / mse))


@torch.no_grad()
def lpips_distance(net, image: torch.Tensor, reference: torch.Tensor) -> float:
    """LPIPS between two (3,S,S) images in [-1,1] with a network from lpips_network."""
    device = next(net.parameters()).device
    return float(net(image[None].to(device).clamp(-1, 1), reference[None].to(device).clamp(-1, 1)))


@torch.no_grad()
def clip_similarity(text_encoder, images: torch.Tensor, captions: list[str]) -> list[float]:
    """Cosine similarity in the checkpoint's CLIP space of each (3,S,S) image to its caption."""
    image_emb = F.normalize(text_encoder.encode_image(images.clamp(-1, 1).to(text_encoder.device), normalize=True),
                            dim=-1)
    text_emb = text_encoder.embed_text(captions)
    return [float(s) for s in (image_emb * text_emb).sum(-1).cpu()]

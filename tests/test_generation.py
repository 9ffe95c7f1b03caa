"""One way to generate (pixelface.networks.generation): the training grid, evaluate.py and sample.py draw the same image
for the same mask, caption and seed."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pixelface.data.datasets import FaceDataset
from pixelface.data.images import to_uint8
from pixelface.data.mask_files import read_labels
from pixelface.data.masks import color_tensor
from pixelface.evaluation import context
from pixelface.networks import generation
from pixelface.networks.checkpoint import load_generator
from pixelface.training.runs import latest_checkpoint
from pixelface.training.trainer import Trainer
from conftest import load_script

GRID_PAD = 2  # torchvision.utils.make_grid's padding, which trainer.save_grid keeps


def grid_cell(path, k: int, size: int) -> np.ndarray:
    grid = np.asarray(Image.open(path).convert("RGB"))
    left = GRID_PAD + k * (size + GRID_PAD)
    return grid[GRID_PAD:GRID_PAD + size, left:left + size]


def record_evaluation_images(monkeypatch) -> dict:
    """{sample k: image} of every image the evaluation draws from now on."""
    drawn = {}
    real_generate = context.generate_images

    def recording(g_ema, cfg_, encoder, batch, samples, seed):
        images = real_generate(g_ema, cfg_, encoder, batch, samples, seed)
        drawn.update({k: image for k, image in zip(samples, images.cpu())})
        return images
    monkeypatch.setattr(context, "generate_images", recording)
    return drawn


def test_image_seed_is_a_pure_function_of_base_seed_and_index():
    assert generation.image_seed(3, 5) == generation.image_seed(3, 5)
    seeds = {generation.image_seed(s, k) for s in range(4) for k in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2 ** 32 for s in seeds)
    with pytest.raises(ValueError, match="must be >= 0"):
        generation.image_seed(-1, 0)


def test_training_grid_evaluation_and_sample_script_draw_the_same_image(ckpt, tmp_path, monkeypatch):
    g, cfg = load_generator(ckpt)
    size = cfg.MODEL.SIZE
    run_dir = ckpt.parent.parent
    last_grid = sorted((run_dir / "samples").glob("fakes-*.png"))[-1]   # drawn by the checkpoint's G_ema
    assert latest_checkpoint(run_dir) == ckpt and int(last_grid.stem.split("-")[1]) == int(ckpt.stem.split("-")[1])
    test = FaceDataset(cfg, "test", train=False)
    count = 2

    # evaluate.py, one image per forward pass, base seed = the training seed: its images k are the grid's
    drawn = record_evaluation_images(monkeypatch)
    load_script("evaluate").main(["--ckpt", str(ckpt), "--num", str(count), "--seeds", str(cfg.SEED), "--batch", "1",
                                  "--metrics", "texture", "--device", "cpu"])
    assert sorted(drawn) == list(range(count))

    for k in range(count):
        seed = generation.image_seed(cfg.SEED, k)
        out = tmp_path / f"sample{k}"
        assert load_script("sample").main(["--ckpt", str(ckpt), "--from-dataset", "test", "--ids", test.ids[k],
                                           "--seeds", str(seed), "--out", str(out)]) == 0
        sampled = np.asarray(Image.open(out / f"000_seed{seed}.png").convert("RGB"))
        evaluated = to_uint8(drawn[k]).permute(1, 2, 0).numpy()
        assert np.array_equal(sampled, evaluated), k
        assert np.array_equal(sampled, grid_cell(last_grid, k, size)), k
    # and the images differ from one another: the equalities above compare something
    assert not torch.equal(drawn[0], drawn[1])


def test_masks_stored_larger_than_the_model_reach_g_alike_in_grid_evaluation_and_sample(ckpt, tmp_path, monkeypatch):
    """128-px masks (and images) for a 64-px model: training grid, evaluate.py and sample.py --from-dataset all
    turn a mask into G's input by one rule (data.mask_input.generator_input), so they draw identical images."""
    _, cfg = load_generator(ckpt)
    big = tmp_path / "big"
    shutil.copytree(cfg.DATA.ROOT, big)
    for folder, resample in ((cfg.DATA.MASK_DIR, Image.NEAREST), (cfg.DATA.IMAGE_DIR, Image.BICUBIC)):
        for path in (big / folder).iterdir():
            picture = Image.open(path)
            picture.resize((2 * picture.width, 2 * picture.height), resample).save(path, quality=95)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["config"]["DATA"]["ROOT"] = str(big)
    big_ckpt = tmp_path / "big.pt"
    torch.save(state, big_ckpt)
    g, cfg = load_generator(big_ckpt)
    test = FaceDataset(cfg, "test", train=False)
    item = test[0]
    full = read_labels(test.mask_paths[0], kind=cfg.DATA.MASK_KIND)
    assert full.shape == (128, 128) and item["mask"].shape == (3, 64, 64)
    assert not torch.equal(item["mask"], color_tensor(item["labels"]))   # blended borders: the hard rule differs

    trainer = Trainer(cfg, tmp_path / "run", torch.device("cpu"), progress_bar=False)
    trainer.G_ema.load_state_dict(g.state_dict())
    grid = trainer._grid_inputs()
    from_grid = trainer.grid_images(grid)
    drawn = record_evaluation_images(monkeypatch)
    load_script("evaluate").main(["--ckpt", str(big_ckpt), "--num", "2", "--seeds", str(cfg.SEED), "--batch", "1",
                                  "--metrics", "texture", "--device", "cpu"])
    for k in range(2):
        seed = generation.image_seed(cfg.SEED, k)
        out = tmp_path / f"sample{k}"
        assert load_script("sample").main(["--ckpt", str(big_ckpt), "--from-dataset", "test", "--ids", test.ids[k],
                                           "--seeds", str(seed), "--out", str(out), "--device", "cpu"]) == 0
        sampled = np.asarray(Image.open(out / f"000_seed{seed}.png").convert("RGB"))
        assert np.array_equal(sampled, to_uint8(drawn[k]).permute(1, 2, 0).numpy()), k
        assert np.array_equal(sampled, to_uint8(from_grid[k].cpu()).permute(1, 2, 0).numpy()), k

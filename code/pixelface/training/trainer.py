"""The one training loop (PixelFace+/code/trainer.py:434-729), organised in phases as StyleGAN2-ADA does.

Each step runs: D main (real, fake, mismatched text), D regularisation (lazy R1), G main (adversarial +
conditional + CLIP), G regularisation (lazy path length), then the EMA update. Time is counted in images
shown by all ranks together, so logging, samples and snapshots do not depend on batch size or GPU count.
Forward passes that need gradients go through the DDP wrappers, so gradients really are averaged.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from pixelface.core import distributed as dist
from pixelface.core.config import SCHEMA, ConfigError, config_changes, to_plain, to_yaml
from pixelface.core.files import atomic_write, write_text_atomic
from pixelface.core.watchdog import STALL_EXIT_CODE, LocalBoard, Watchdog, store_board
from pixelface.data.caption_regions import named_zone_weights
from pixelface.data.datasets import FaceDataset
from pixelface.data.face_zones import MAKEUP_ZONES
from pixelface.data.hard_negatives import HardNegatives
from pixelface.data.images import to_uint8
from pixelface.data.masks import color_tensor
from pixelface.evaluation.metrics import evaluate_generator
from pixelface.evaluation.registry import METRICS, is_lower_better
from pixelface.networks import generation, losses
from pixelface.networks.checkpoint import FORMAT, atomic_save, check_weights, load_checkpoint
from pixelface.networks.discriminator import Discriminator
from pixelface.networks.generator import Generator
from pixelface.networks.text_encoder import TextEncoder, pin_weights_hash
from pixelface.training import phases


# SIGTERM: what kill, Ctrl-C's cousin and most schedulers send; SIGUSR1: what Slurm sends ahead of the time limit
# (sbatch --signal=USR1@120), so the job can checkpoint and be requeued.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps produced non-finite losses."""


@dataclass
class Progress:
    """Counters that, with the networks, optimisers and RNG states, define where training stands."""
    nimg: int = 0              # real images shown, all ranks together
    step: int = 0              # optimisation steps taken (lazy regularisation keys off this)
    epoch: int = 0
    batch_in_epoch: int = 0    # batches of `epoch` already consumed (the sampler position)
    pl_mean: float = 0.0       # running mean path length, identical on every rank
    nonfinite_streak: int = 0
    best: float = math.inf     # best TRAIN.EVAL_METRIC so far, sign-flipped when higher is better


def reshard_position(batches: int, saved_batch: int, saved_world: int, batch: int, world: int) -> int:
    """Batches per rank already consumed in the current epoch, for a run resumed with another batch size or number
    of processes: the images of the epoch shown so far (batches x saved_batch x saved_world) are the first ones of
    the epoch's permutation, which DistributedSampler deals out rank by rank, so skipping that many images in total,
    rounded down to whole new batches, continues the epoch (at most one batch of images is shown twice)."""
    return (batches * saved_batch * saved_world) // (batch * world)


class _Offset(Sampler):
    """The rank's share of one epoch, starting `offset` items in: resuming mid-epoch skips what was seen."""

    def __init__(self, sampler: DistributedSampler, offset: int):
        self.indices = list(sampler)[offset:]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def adam_optimizer(net, lr: float, beta2: float, reg_interval: int) -> torch.optim.Adam:
    """Adam with StyleGAN2's lazy-regularisation correction of lr and beta2 (beta1 = 0)."""
    c = reg_interval / (reg_interval + 1)
    return torch.optim.Adam(net.parameters(), lr=lr * c, betas=(0.0, beta2 ** c))


def ema_beta(cfg, batch_total: int, nimg: int) -> float:
    """Per-step EMA decay from a half-life in images; 1.25 kimg at batch 4 gives the reference 0.5^(32/1e4)."""
    halflife = cfg.TRAIN.EMA_HALFLIFE_KIMG * 1000
    if cfg.TRAIN.EMA_RAMPUP > 0:
        halflife = min(halflife, nimg * cfg.TRAIN.EMA_RAMPUP)
    return 0.5 ** (batch_total / max(halflife, 1e-8))


def lr_factor(cfg, nimg: int) -> float:
    """Multiplier of both learning rates after nimg images: 1, then (TRAIN.LR_RAMPDOWN_KIMG > 0) a linear fall
    to LR_RAMPDOWN_FINAL over the run's last LR_RAMPDOWN_KIMG kimg. Without an L1 anchor, a small G trained at a
    high rate keeps moving once it is good (docs/diagnosis.md section 11); the rampdown lets it settle."""
    t = cfg.TRAIN
    if t.LR_RAMPDOWN_KIMG <= 0:
        return 1.0
    start = t.TOTAL_KIMG - t.LR_RAMPDOWN_KIMG
    done = min(max((nimg / 1000 - start) / t.LR_RAMPDOWN_KIMG, 0.0), 1.0)
    return 1.0 - done * (1.0 - t.LR_RAMPDOWN_FINAL)


def _crossed(before: int, after: int, every_kimg: float) -> bool:
    every = int(round(every_kimg * 1000))
    return every > 0 and before // every != after // every


def _rng_state(device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """Rows of (N,3,H,W) images in [-1,1] as one PNG grid, one row per tensor, in torchvision's layout (2 px
    black lines, also around the edge); each cell holds the pixels scripts/sample.py writes for that image."""
    cells = to_uint8(torch.cat([r.detach().float().cpu() for r in rows]))
    grid = torchvision.utils.make_grid(cells, nrow=rows[0].shape[0])
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy())
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


class Throughput:
    """Training speed per log window, with the window's maintenance (sample grids, evaluation,
    snapshots) timed apart, as StyleGAN2-ADA separates sec/kimg from maintenance: a rate averaged over
    everything since start would fall whenever an evaluation ran, whatever the training steps cost.
    Monotonic time: a wall-clock adjustment mid-window would otherwise show up as a speed change."""

    def __init__(self, nimg: int):
        self.restart(nimg)

    def restart(self, nimg: int) -> None:
        self.started, self.nimg, self.maintenance_s = time.monotonic(), nimg, 0.0

    @contextlib.contextmanager
    def maintenance(self):
        began = time.monotonic()
        try:
            yield
        finally:
            self.maintenance_s += time.monotonic() - began

    def window(self, nimg: int) -> dict:
        """{img_per_s, train_s, maintenance_s} since the last call (or the start); starts the next window."""
        train_s = max(time.monotonic() - self.started - self.maintenance_s, 1e-9)
        row = {"img_per_s": (nimg - self.nimg) / train_s, "train_s": train_s, "maintenance_s": self.maintenance_s}
        self.restart(nimg)
        return row


class TrainingNetworks:
    """G and D as the training phases call them (pixelface.training.phases.Networks): through DDP where a pass's
    gradients must be averaged across ranks, through torch.compile (TRAIN.COMPILE) in the main phases. R1 and
    path length differentiate twice, which compiled graphs do not support, so they keep the eager modules."""

    def __init__(self, G: torch.nn.Module, D: torch.nn.Module, distributed: bool, compile_main: bool):
        ddp = (lambda m: DDP(m, forward_sync_buffers=False)) if distributed else (lambda m: m)
        # Static shapes: the batch is fixed, and symbolic shapes trip inductor on G's folds; a new word
        # count (TEXT.FIXED_LENGTH false) costs one recompilation.
        compiled = (lambda m: torch.compile(m, dynamic=False)) if compile_main else (lambda m: m)
        self.synced = {"G": ddp(G), "D": ddp(D)}
        self.variants = {(name, synced, main): (compiled(module) if main else module)
                         for name, bare in (("G", G), ("D", D))
                         for synced, module in ((True, self.synced[name]), (False, bare)) for main in (True, False)}

    def generate(self, masks, feats, z, *, synced: bool, main: bool, return_latents: bool = False):
        out = self.variants["G", synced, main](masks, feats.words, z, word_padding=feats.padding,
                                               return_latents=return_latents)
        return (out[0], out[1]["latents"]) if return_latents else out

    def discriminate(self, images, masks, sentences, *, synced: bool, main: bool):
        return self.variants["D", synced, main](images, masks, sentences)

    def accumulating_d(self):
        """D's gradients accumulate locally inside this block, to be averaged by the next synced backward."""
        d = self.synced["D"]
        return d.no_sync() if isinstance(d, DDP) else contextlib.nullcontext()


class Trainer:
    """Holds the networks, optimisers and counters of one run; `run()` trains to TRAIN.TOTAL_KIMG."""

    def __init__(self, cfg, run_dir: Path, device: torch.device, progress_bar: bool = True):
        # run_dir may be None while a new run's folder is not made yet; it must be set before run()
        self.cfg, self.device = cfg, device
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rank, self.world = dist.rank(), dist.world_size()
        self.show_progress = progress_bar and self.rank == 0
        torch.manual_seed(cfg.SEED + self.rank)  # per-rank randomness (z, noise, dropout)

        self.dataset = FaceDataset(cfg, "train", train=True)
        share = len(self.dataset) // self.world
        if share < cfg.TRAIN.BATCH_SIZE:   # drop_last would leave every epoch empty: an endless loop
            raise ConfigError(f"TRAIN.BATCH_SIZE = {cfg.TRAIN.BATCH_SIZE} is more than each of the {self.world} "
                              f"processes' share of the {len(self.dataset)} training images ({share})")
        self.hard_negatives = HardNegatives(self.dataset) if cfg.TRAIN.MISMATCH_HARD_NEGATIVES > 0 else None
        self.named_zone_weight = self._named_zone_weight()
        pin_weights_hash(cfg)  # checkpoints then name the exact CLIP file their generator reads
        self.text = TextEncoder.from_config(cfg).to(device)
        self.G = Generator.from_config(cfg).to(device)
        self.D = Discriminator.from_config(cfg).to(device)
        if self.world > 1:  # identical starting weights everywhere, whatever each rank's seed did
            for net in (self.G, self.D):
                for t in net.state_dict().values():
                    torch.distributed.broadcast(t, 0)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = adam_optimizer(self.G, cfg.TRAIN.LR_G, cfg.TRAIN.BETA2, cfg.TRAIN.PL_INTERVAL)
        self.opt_D = adam_optimizer(self.D, cfg.TRAIN.LR_D, cfg.TRAIN.BETA2, cfg.TRAIN.R1_INTERVAL)
        self.base_lr = {opt: opt.param_groups[0]["lr"] for opt in (self.opt_G, self.opt_D)}
        self.progress = Progress()
        self.amp = phases.amp_dtype(cfg.TRAIN.AMP, cfg, device)
        self._autocast, self._reg_autocast = phases.autocasts(device.type, self.amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp is torch.float16)
        if cfg.TRAIN.CHANNELS_LAST and device.type == "cuda":
            for net in (self.G, self.D, self.G_ema):
                net.to(memory_format=torch.channels_last)
        self.nets = TrainingNetworks(self.G, self.D, self.world > 1, cfg.TRAIN.COMPILE)
        self.stop_requested = ""          # the name of the signal that asked to stop
        self.resume_notes: list[str] = []  # what a resume had to adapt (another world size or batch), for the log
        self._last_snapshot = time.monotonic()
        self.stats: dict[str, list[float]] = {}
        self.beat = _no_beat               # the progress watchdog's heartbeat while run() trains

    # ----------------------------------------------------------------------------------------- setup
    @property
    def batch_total(self) -> int:
        return self.cfg.TRAIN.BATCH_SIZE * self.world

    # -------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything for exact resume (gathers every rank's RNG state, so call it on all ranks)."""
        rng = dist.gather_objects(_rng_state(self.device))
        return {
            "format": FORMAT, "config": to_plain({k: v for k, v in self.cfg.items() if not k.startswith("_")}),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "scaler": self.scaler.state_dict(), "progress": asdict(self.progress), "rng": rng,
            "world_size": self.world,
        }

    def load_state_dict(self, ckpt: dict) -> None:
        for name in ("G", "D", "G_ema"):
            getattr(self, name).load_state_dict(ckpt[name])
        self.opt_G.load_state_dict(ckpt["opt_G"])
        self.opt_D.load_state_dict(ckpt["opt_D"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.progress = Progress(**ckpt["progress"])
        rng = ckpt["rng"]
        saved_world = int(ckpt.get("world_size", len(rng) or 1))
        saved_batch = int(ckpt["config"]["TRAIN"]["BATCH_SIZE"])
        if (saved_world, saved_batch) != (self.world, self.cfg.TRAIN.BATCH_SIZE):
            self.progress.batch_in_epoch = reshard_position(self.progress.batch_in_epoch, saved_batch, saved_world,
                                                            self.cfg.TRAIN.BATCH_SIZE, self.world)
            self.resume_notes.append(
                f"resumed with {self.world} process(es) x batch {self.cfg.TRAIN.BATCH_SIZE} from a checkpoint of "
                f"{saved_world} x {saved_batch}: images shown ({self.progress.nimg}) and every kimg schedule kept, this "
                f"epoch's sampler re-sharded after its first {self.progress.batch_in_epoch * self.batch_total} images"
                + ("" if len(rng) == self.world else ", each rank's random stream restarted from the run's seed"))
        if len(rng) == self.world:  # a different world size cannot replay the same random stream
            _set_rng_state(rng[self.rank], self.device)

    def fingerprints(self) -> dict[str, str]:
        """sha256 of every parameter and buffer of G, D and G_ema: equal on all ranks when DDP works."""
        out = {}
        for name in ("G", "D", "G_ema"):
            h = hashlib.sha256()
            for t in getattr(self, name).state_dict().values():
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            out[name] = h.hexdigest()
        return out

    def check_consistency(self) -> None:
        """Raise if any rank's networks differ from rank 0's (the reference's silent DDP failure)."""
        prints = dist.gather_objects(self.fingerprints())
        bad = [r for r, fp in enumerate(prints) if fp != prints[0]]
        if bad:
            raise RuntimeError(f"ranks {bad} hold different parameters from rank 0: DDP is not synchronising")

    def save_checkpoint(self, reason: str) -> Path | None:
        """Write checkpoints/ckpt-<nimg>.pt atomically, update `latest`, keep the last K (rank 0 writes)."""
        self.check_consistency()
        state = self.state_dict()
        self._last_snapshot = time.monotonic()
        if self.rank != 0:
            return None
        folder = self.run_dir / "checkpoints"
        path = folder / f"ckpt-{self.progress.nimg:09d}.pt"
        atomic_save(state, path)
        write_text_atomic(folder / "latest", path.name + "\n")
        keep = self.cfg.TRAIN.KEEP_CHECKPOINTS
        for old in sorted(folder.glob("ckpt-*.pt"))[:-keep] if keep > 0 else []:
            old.unlink()
        self.log(f"checkpoint {path.name} ({reason})")
        return path

    # ------------------------------------------------------------------------------------ logging
    def log(self, text: str) -> None:
        if self.rank == 0:
            line = f"[{time.strftime('%H:%M:%S')}] {text}"
            if not self.show_progress:
                print(line, flush=True)
            else:
                from tqdm import tqdm
                tqdm.write(line)
            with open(self.run_dir / "log.txt", "a") as f:
                f.write(line + "\n")

    def _record(self, **values) -> None:
        """Keep detached values; they are turned into numbers only at log time (no GPU sync per step)."""
        for k, v in values.items():
            self.stats.setdefault(k, []).append(v.detach().float() if torch.is_tensor(v) else float(v))

    def _flush_stats(self, writer, throughput: Throughput) -> None:
        """Average the recorded values over steps and ranks; log a line and write scalars."""
        names = sorted(self.stats)
        means = torch.stack([torch.as_tensor(sum(self.stats[n]) / len(self.stats[n]), device=self.device)
                             for n in names]).double()
        means = dist.all_reduce_mean(means).cpu()
        self.stats.clear()
        p = self.progress
        timing = throughput.window(p.nimg)
        row = {"kimg": p.nimg / 1000, "step": p.step, **timing, **dict(zip(names, means.tolist()))}
        if self.rank == 0:
            with open(self.run_dir / "stats.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            for k, v in row.items():
                if k not in ("kimg", "step"):
                    writer.add_scalar(k, v, p.nimg)
            writer.add_scalar("lr/G", self.opt_G.param_groups[0]["lr"], p.nimg)
            writer.add_scalar("lr/D", self.opt_D.param_groups[0]["lr"], p.nimg)
            short = " ".join(f"{k}={v:.3f}" for k, v in row.items() if k.startswith("loss/"))
            self.log(f"kimg {row['kimg']:.2f} step {p.step} {timing['img_per_s']:.1f} img/s "
                     f"(+{timing['maintenance_s']:.0f} s maintenance) {short}")

    # ------------------------------------------------------------------------------------ samples
    def _grid_inputs(self):
        """Fixed test items and seeds: the same grid is drawn at every snapshot. Image k has the seed
        image_seed(SEED, k), so scripts/sample.py redraws it from the item's mask and caption."""
        test = FaceDataset(self.cfg, "test", train=False)
        n = min(self.cfg.TRAIN.GRID_SIZE, len(test))
        items = [test[i] for i in range(n)]
        batch = {k: (torch.stack([it[k] for it in items]) if torch.is_tensor(items[0][k]) else [it[k] for it in items])
                 for k in items[0]}
        return batch, [generation.image_seed(self.cfg.SEED, k) for k in range(n)]

    def grid_images(self, grid) -> torch.Tensor:
        """G_ema's (N,3,S,S) images of the grid, on the training device."""
        batch, seeds = grid
        return generation.generate(self.G_ema, self.text, batch["mask"], list(batch["caption"]),
                                   seeds)  # one at a time: bit-equal to scripts/sample.py

    @torch.no_grad()
    def sample_grid(self, grid, name: str, writer=None) -> None:
        fake = self.grid_images(grid)
        path = self.run_dir / "samples" / f"{name}.png"
        save_grid([fake], path)
        if writer is not None:
            writer.add_image("samples", torchvision.utils.make_grid(fake.cpu().clamp(-1, 1) * 0.5 + 0.5,
                                                                   nrow=fake.shape[0]), self.progress.nimg)

    def _save_grid_reference(self, grid) -> None:
        batch, _ = grid
        folder = self.run_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        save_grid([color_tensor(batch["labels"]), batch["image"]], folder / "reals.png")   # colours, whatever G reads
        write_text_atomic(folder / "captions.txt", "\n".join(batch["caption"]) + "\n")

    # ------------------------------------------------------------------------------------- phases
    def _finite_or_skip(self, loss: torch.Tensor, net, opt) -> bool:
        """Step `opt` unless the loss or a gradient is non-finite on some rank (then all ranks skip)."""
        local_ok = bool(torch.isfinite(loss).item())
        if local_ok and not self.scaler.is_enabled():  # with fp16 the scaler itself handles inf gradients
            local_ok = all(bool(torch.isfinite(q.grad).all()) for q in net.parameters() if q.grad is not None)
        ok = not dist.any_rank(not local_ok, self.device)
        if ok:
            self.scaler.step(opt)
            self.scaler.update()
        opt.zero_grad(set_to_none=True)
        return ok

    def _z(self, n: int) -> list[torch.Tensor]:
        return [torch.randn(n, self.cfg.MODEL.STYLE_DIM, device=self.device)]

    def step_context(self) -> phases.StepContext:
        p = self.progress
        return phases.StepContext(self.cfg, self.nets, self.text, self._z, self._autocast, self.scaler.scale,
                                  self._record, kimg=p.nimg / 1000, epoch=p.epoch, reduce_mean=dist.all_reduce_mean,
                                  reg_autocast=self._reg_autocast)

    def phase_batch(self, batch: dict) -> phases.PhaseBatch:
        feats = self.text.encode(batch["caption"])
        return phases.PhaseBatch.build(self.cfg.TRAIN, batch["image"].to(self.device),
                                       batch["mask"].to(self.device), feats, batch["caption"], batch["labels"],
                                       wrong=self.mismatched_sentences(batch, feats),
                                       named_zone_weight=self.named_zone_weight)

    def _named_zone_weight(self) -> torch.Tensor | None:
        """TRAIN.RECON_ZONE_NAMED_SHARE's weight of a named make-up zone (lips, cheeks, eyelids), from every
        caption of the training split; None without it (PhaseBatch then reads TRAIN.RECON_ZONE_NAMED_BOOST)."""
        train = self.cfg.TRAIN
        if train.RECON_ZONE_NAMED_SHARE <= 0:
            return None          # (load_config refuses the share together with the boost)
        captions = [c for i in range(len(self.dataset)) for c in self.dataset.captions(i)]
        return named_zone_weights(captions, train.RECON_ZONE_NAMED_SHARE)

    def mismatched_sentences(self, batch: dict, feats) -> torch.Tensor | None:
        """D's mismatched sentences: None (PhaseBatch rotates the batch's own) or, with
        TRAIN.MISMATCH_HARD_NEGATIVES, the rotated ones with that share replaced by hard negatives of the same
        face (its caption plus an attribute it lacks), drawn from the step and rank, so a resume redraws them."""
        if self.hard_negatives is None:
            return None
        rng = torch.Generator().manual_seed((self.cfg.SEED * 1_000_003 + self.progress.step) * self.world + self.rank)
        negatives = self.hard_negatives(batch["index"].tolist(), list(batch["caption"]), rng)
        share = self.cfg.TRAIN.MISMATCH_HARD_NEGATIVES
        chosen = [k for k, negative in enumerate(negatives)
                  if negative is not None and float(torch.rand((), generator=rng)) < share]
        wrong = losses.rotate(feats.sentence)
        if chosen:
            wrong = wrong.clone()
            wrong[chosen] = self.text.encode([negatives[k] for k in chosen]).sentence
        return wrong

    def _train_only(self, net: torch.nn.Module) -> None:
        for other in (self.G, self.D):
            other.requires_grad_(other is net)

    def d_main(self, batch: phases.PhaseBatch) -> bool:
        self._train_only(self.D)
        return self._finite_or_skip(phases.d_main(self.step_context(), batch), self.D, self.opt_D)

    def d_reg(self, batch: phases.PhaseBatch) -> bool:
        return self._finite_or_skip(phases.d_reg(self.step_context(), batch), self.D, self.opt_D)

    def g_main(self, batch: phases.PhaseBatch) -> bool:
        self._train_only(self.G)
        return self._finite_or_skip(phases.g_main(self.step_context(), batch), self.G, self.opt_G)

    def g_reg(self, batch: phases.PhaseBatch) -> bool:
        loss, pl_mean = phases.g_reg(self.step_context(), batch, self.progress.pl_mean)
        ok = self._finite_or_skip(loss, self.G, self.opt_G)
        if ok:
            self.progress.pl_mean = pl_mean
        return ok

    @torch.no_grad()
    def update_ema(self) -> bool:
        """Move G_ema toward G; False (G_ema left as it was) when G holds a non-finite value, so a bad step is
        skipped in G_ema as in G and every checkpoint's G_ema stays usable."""
        finite = [torch.isfinite(t).all() for t in self.G.state_dict().values() if t.is_floating_point()]
        if not bool(torch.stack(finite).all()):      # one device sync per step, not one per tensor
            return False
        beta = ema_beta(self.cfg, self.batch_total, self.progress.nimg)
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)
        return True

    def train_step(self, batch) -> None:
        cfg, p = self.cfg.TRAIN, self.progress
        inputs = self.phase_batch(batch)
        factor = lr_factor(self.cfg, p.nimg)
        for opt, lr in self.base_lr.items():
            for group in opt.param_groups:
                group["lr"] = lr * factor
        self.beat(f"step {p.step}: D main")
        ok = self.d_main(inputs)
        if p.step % cfg.R1_INTERVAL == 0:
            self.beat(f"step {p.step}: D R1")
            ok &= self.d_reg(inputs)
        self.beat(f"step {p.step}: G main")
        ok &= self.g_main(inputs)
        if p.step % cfg.PL_INTERVAL == 0:
            self.beat(f"step {p.step}: G path length")
            ok &= self.g_reg(inputs)
        self.beat(f"step {p.step}: EMA")
        ok &= self.update_ema()
        p.step += 1
        p.nimg += self.batch_total
        p.batch_in_epoch += 1
        p.nonfinite_streak = 0 if ok else p.nonfinite_streak + 1
        if not ok:
            self.log(f"step {p.step}: non-finite loss or gradient, update skipped "
                     f"({p.nonfinite_streak} in a row)")

    # ---------------------------------------------------------------------------------- main loop
    def _loader(self) -> DataLoader:
        p, cfg = self.progress, self.cfg
        sampler = DistributedSampler(self.dataset, num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=cfg.SEED, drop_last=True)
        sampler.set_epoch(p.epoch)
        self.dataset.set_epoch(p.epoch)
        # A private generator: the loader must not draw from the global RNG that z and noise come from.
        return DataLoader(self.dataset, batch_size=cfg.TRAIN.BATCH_SIZE, drop_last=True,
                          sampler=_Offset(sampler, p.batch_in_epoch * cfg.TRAIN.BATCH_SIZE),
                          num_workers=cfg.DATA.NUM_WORKERS, generator=torch.Generator().manual_seed(0),
                          persistent_workers=False)

    def run(self) -> None:
        cfg, p = self.cfg, self.progress
        total = int(round(cfg.TRAIN.TOTAL_KIMG * 1000))
        writer = _summary_writer(self.run_dir) if self.rank == 0 else None
        grid = self._grid_inputs()
        if self.rank == 0:
            self._save_grid_reference(grid)
            if p.nimg == 0:
                self.sample_grid(grid, f"fakes-{0:09d}", writer)
        previous = {sig: signal.signal(sig, self._request_stop) for sig in STOP_SIGNALS}
        self._last_snapshot = time.monotonic()
        throughput = Throughput(p.nimg)
        bar = _progress_bar(total, p.nimg) if self.show_progress else None
        self.log(f"training to {total} images: batch {cfg.TRAIN.BATCH_SIZE} x {self.world} ranks, "
                 f"G {sum(q.numel() for q in self.G.parameters()):,} / D "
                 f"{sum(q.numel() for q in self.D.parameters() if q.requires_grad):,} parameters, "
                 f"{phases.precision_name(self.amp)} (TRAIN.AMP {cfg.TRAIN.AMP})")
        if self.named_zone_weight is not None:
            self.log("make-up zones named in the caption weigh " + ", ".join(
                f"{zone} {w:.2f}" for zone, w in zip(MAKEUP_ZONES, self.named_zone_weight.tolist()))
                + " against 1 (TRAIN.RECON_ZONE_NAMED_SHARE)")
        watchdog = self._start_watchdog()
        try:
            while p.nimg < total:
                self.beat(f"step {p.step}: loading data")
                for batch in self._loader():
                    before = p.nimg
                    self.train_step(batch)
                    if bar is not None:
                        bar.update(p.nimg - before)
                    if p.nonfinite_streak >= cfg.TRAIN.MAX_NONFINITE_SKIPS:
                        self.save_checkpoint("non-finite losses")
                        raise NonFiniteLossError(
                            f"{p.nonfinite_streak} consecutive steps had non-finite losses; stopped at "
                            f"{p.nimg} images (TRAIN.MAX_NONFINITE_SKIPS={cfg.TRAIN.MAX_NONFINITE_SKIPS})")
                    self._periodic(before, total, grid, writer, throughput)
                    self.beat(f"step {p.step}: agreeing on stop or snapshot")
                    stop, due = dist.any_rank_each([bool(self.stop_requested), self._snapshot_due()], self.device)
                    if stop:
                        name = self.stop_requested or "a signal on another rank"
                        self.save_checkpoint(name)
                        self.log(f"stopped by {name}; resume with --resume auto")
                        return
                    if due:
                        self.save_checkpoint(f"{cfg.TRAIN.SNAPSHOT_MINUTES:g} minutes since the last one")
                    if p.nimg >= total:
                        break
                    self.beat(f"step {p.step}: loading data")
                else:
                    p.epoch += 1
                    p.batch_in_epoch = 0
            if not _crossed(p.nimg - self.batch_total, p.nimg, cfg.TRAIN.SNAPSHOT_KIMG):
                self.save_checkpoint("end of training")
        finally:
            if watchdog is not None:
                watchdog.stop()
                self.beat = _no_beat
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()

    def _periodic(self, before, total, grid, writer, throughput: Throughput) -> None:
        t, now, last = self.cfg.TRAIN, self.progress.nimg, self.progress.nimg >= total
        if _crossed(before, now, t.LOG_KIMG) or last:
            self._flush_stats(writer, throughput)
        with throughput.maintenance():       # counted in the next log window, apart from training
            if (_crossed(before, now, t.SAMPLE_KIMG) or last) and self.rank == 0:
                self.beat("sampling the image grid")
                self.sample_grid(grid, f"fakes-{now:09d}", writer)
            if _crossed(before, now, t.EVAL_KIMG) or (last and t.EVAL_KIMG > 0):
                self.beat("evaluating" if self.rank == 0 else "waiting for rank 0's evaluation")
                self._evaluate(writer)
            if _crossed(before, now, t.SNAPSHOT_KIMG):
                self.beat("writing a checkpoint")
                self.save_checkpoint("snapshot")

    def _evaluate(self, writer) -> None:
        """Rank 0 evaluates G_ema while the others wait at a barrier (long process-group timeout)."""
        t = self.cfg.TRAIN
        results = None
        if self.rank == 0:
            results = evaluate_generator(self.G_ema, self.cfg, self.text, split="test", num=t.EVAL_NUM,
                                         metrics=list(t.EVAL_METRICS), device=self.device,
                                         heartbeat=self.beat)["metrics"]
        results = dist.broadcast_object(results)
        if self.rank == 0:
            for k, v in results.items():
                writer.add_scalar(f"metrics/{k}", v, self.progress.nimg)
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"kimg": self.progress.nimg / 1000, **results}) + "\n")
            self.log("evaluation: " + " ".join(f"{k}={v:.4f}" for k, v in results.items()))
        if t.EVAL_METRIC not in results:
            return
        score = results[t.EVAL_METRIC] * (1 if is_lower_better(t.EVAL_METRIC) else -1)
        if score < self.progress.best:
            self.progress.best = score
            state = self.state_dict()
            if self.rank == 0:
                atomic_save(state, self.run_dir / "checkpoints" / "best.pt")
                self.log(f"new best {t.EVAL_METRIC} = {results[t.EVAL_METRIC]:.4f} (checkpoints/best.pt)")

    def _start_watchdog(self) -> Watchdog | None:
        """TRAIN.STALL_TIMEOUT_S > 0: a watchdog over every rank's beats (core/watchdog.py), self.beat its heartbeat."""
        timeout = self.cfg.TRAIN.STALL_TIMEOUT_S
        if timeout <= 0:
            return None
        board = store_board() if self.world > 1 else LocalBoard()
        watchdog = Watchdog(timeout, self.rank, self.world, board, self._stalled).start()
        self.beat = watchdog.beat
        return watchdog

    def _stalled(self, message: str) -> None:
        """The watchdog's verdict: one line from every rank, then this process ends (its main thread may be stuck
        in a collective that would never return); checkpoints are written atomically, so the newest is whole."""
        line = f"[{time.strftime('%H:%M:%S')}] rank {self.rank}: {message}"
        print(line, file=sys.stderr, flush=True)
        if self.rank == 0:
            with open(self.run_dir / "log.txt", "a") as f:
                f.write(line + "\n")
        os._exit(STALL_EXIT_CODE)

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = signal.Signals(signum).name

    def _snapshot_due(self) -> bool:
        """TRAIN.SNAPSHOT_MINUTES of wall time since the last checkpoint (any reason) have passed."""
        minutes = self.cfg.TRAIN.SNAPSHOT_MINUTES
        return minutes > 0 and time.monotonic() - self._last_snapshot >= 60 * minutes


def _no_beat(what: str) -> None:
    """The heartbeat outside run(), or with the watchdog off."""


# ------------------------------------------------------------------------------------- run folders
def _summary_writer(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(run_dir / "tensorboard"))


def _progress_bar(total: int, done: int):
    from tqdm import tqdm
    return tqdm(total=total, initial=done, unit="img", dynamic_ncols=True, smoothing=0.1)


def write_config(run_dir: Path, cfg) -> None:
    write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))


RESUME_ENTRIES = ("config", "G", "D", "G_ema", "opt_G", "opt_D", "scaler", "progress", "rng")


def load_resume(trainer: Trainer, ckpt_path: Path) -> list[str]:
    """Load a training checkpoint into `trainer`, or ConfigError naming the file when it does not fit. Returns the
    config keys this resume changes ('KEY: old -> new'), for the log."""
    ckpt = load_checkpoint(ckpt_path, needs=RESUME_ENTRIES)
    for name in ("G", "D", "G_ema"):       # non-finite weights would only ever train into more of them
        check_weights(ckpt[name], f"checkpoint {ckpt_path}: {name}", getattr(trainer, name).state_dict())
    pinned = (ckpt.get("config") or {}).get("TEXT", {}).get("PRETRAINED_SHA256", "")
    if pinned and pinned != trainer.cfg.TEXT.PRETRAINED_SHA256:
        raise ConfigError(f"{ckpt_path} was trained with TEXT.PRETRAINED sha256 {pinned[:12]}..., but "
                          f"{trainer.cfg.TEXT.PRETRAINED} now has {trainer.cfg.TEXT.PRETRAINED_SHA256[:12] or 'none'}...: "
                          f"put the original file back to resume")
    # Equalised layers store weight/lr_mul: a checkpoint read under another multiplier loads without a shape
    # error but computes another function, so the multipliers must match (a missing key is its default).
    saved = (ckpt.get("config") or {}).get("MODEL", {})
    for key in ("LR_MLP", "LR_TEXT_MLP"):
        was = saved.get(key, SCHEMA["MODEL"][key][0])
        if was != trainer.cfg.MODEL[key]:
            raise ConfigError(f"{ckpt_path} was trained with MODEL.{key} = {was}, this config has "
                              f"{trainer.cfg.MODEL[key]}: resume with --set MODEL.{key}={was}")
    try:
        trainer.load_state_dict(ckpt)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{ckpt_path} does not fit this config ({type(e).__name__}: {first}); resume "
                          f"with the config it was trained with (its config.yaml)") from None
    return config_changes(ckpt["config"], trainer.cfg)


def check_eval_settings(cfg) -> None:
    """TRAIN.EVAL_METRICS must name registered metrics; checked before a run folder is touched."""
    unknown = [m for m in cfg.TRAIN.EVAL_METRICS if m not in METRICS]
    if cfg.TRAIN.EVAL_KIMG > 0 and unknown:
        raise ConfigError(f"TRAIN.EVAL_METRICS: unknown metric(s) {unknown}; expected names from "
                          f"{sorted(METRICS)}")

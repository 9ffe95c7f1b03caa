"""The training loop on the tiny smoke config: checkpoints, NaN guard, real DDP, exact resume."""
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from pixelface.core.config import ConfigError, load_config
from pixelface.data.caption_regions import named_makeup_zones
from pixelface.networks import generation, layers, losses
from pixelface.networks.checkpoint import file_hash, load_checkpoint, load_generator
from pixelface.training.clip_pretrain import pretrain_clip
from conftest import REPO_ROOT, SMOKE, free_port, run_main
from pixelface.networks.text_encoder import TextEncoder
from pixelface.training import phases, trainer as trainer_module
from pixelface.training.runs import latest_checkpoint, plan_resume
from pixelface.training.trainer import NonFiniteLossError, Throughput, Trainer, load_resume, reshard_position, write_config

def smoke_cfg(root, *overrides):
    return load_config(SMOKE, [f"DATA.ROOT={root}", "DATA.SYNTHESIZE=false", *overrides])


def test_all_configs_load():
    names = sorted(p.name for p in (REPO_ROOT / "cfg").glob("*.yml"))
    assert {"mmceleba.yml", "smoke.yml", "synthface.yml"} <= set(names)
    for name in names:
        load_config(REPO_ROOT / "cfg" / name)


def test_checkpoint_holds_everything_for_resume_and_sampling(smoke_root, tmp_path):
    torch.set_num_threads(1)
    trainer = Trainer(smoke_cfg(smoke_root), tmp_path, torch.device("cpu"), progress_bar=False)
    trainer.run()
    path = latest_checkpoint(tmp_path)
    assert path is not None and path.name == "ckpt-000000016.pt"
    ckpt = load_checkpoint(path)
    assert {"config", "G", "D", "G_ema", "opt_G", "opt_D", "progress", "rng"} <= set(ckpt)
    assert ckpt["progress"]["nimg"] == 16 and ckpt["progress"]["step"] == 8
    assert ckpt["progress"]["pl_mean"] > 0  # the path-length mean is part of the state
    assert len(ckpt["rng"]) == 1 and ckpt["rng"][0]["cpu"].dtype == torch.uint8
    assert len(list((tmp_path / "checkpoints").glob("ckpt-*.pt"))) == 2  # KEEP_CHECKPOINTS
    assert (tmp_path / "samples" / "fakes-000000016.png").is_file()
    assert (tmp_path / "samples" / "captions.txt").read_text().count("\n") == 4
    assert any((tmp_path / "tensorboard").iterdir())
    g_ema, cfg = load_generator(path)
    assert cfg.MODEL.SIZE == 64
    for a, b in zip(g_ema.parameters(), trainer.G_ema.parameters()):
        assert torch.equal(a, b)


def test_resume_from_a_file_outside_a_run_folder_starts_a_new_run(smoke_root, tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "out" / "smoke-00000"
    run.mkdir(parents=True)
    write_config(run, smoke_cfg(smoke_root))
    Trainer(smoke_cfg(smoke_root), run, torch.device("cpu"), progress_bar=False).run()
    inside = latest_checkpoint(run)
    plan = plan_resume(tmp_path / "out", "smoke", str(inside))
    assert (plan.run_dir, plan.checkpoint) == (run, inside)
    loose = tmp_path / "models" / "converted.pt"
    loose.parent.mkdir()
    shutil.copy(inside, loose)
    plan = plan_resume(tmp_path / "out", "smoke", str(loose))
    assert (plan.run_dir, plan.checkpoint) == (None, loose)   # its grandparent is no run


def test_resume_refuses_a_clip_file_that_changed(smoke_root, tmp_path):
    """The checkpoint's config pins the CLIP file's sha256: resuming (or sampling) with another file fails."""
    torch.set_num_threads(1)
    clip_path = tmp_path / "clip.pt"
    pretrain = smoke_cfg(smoke_root, f"TEXT.PRETRAINED={clip_path}", "TRAIN.TOTAL_KIMG=0.004")
    pretrain_clip(pretrain, clip_path, epochs=1)
    Trainer(pretrain, tmp_path / "run", torch.device("cpu"), progress_bar=False).run()
    path = latest_checkpoint(tmp_path / "run")
    assert load_checkpoint(path)["config"]["TEXT"]["PRETRAINED_SHA256"] == file_hash(clip_path, length=64)
    pretrain_clip(pretrain, clip_path, epochs=1, seed=7, force=True)
    with pytest.raises(ConfigError, match="has changed since this model was trained"):
        TextEncoder.from_config(load_generator(path)[1])
    again = Trainer(smoke_cfg(smoke_root, f"TEXT.PRETRAINED={clip_path}"), tmp_path / "run", torch.device("cpu"),
                    progress_bar=False)
    with pytest.raises(ConfigError, match="put the original file back to resume"):
        load_resume(again, path)


def test_resume_refuses_another_text_mlp_learning_rate(smoke_root, tmp_path):
    """Equalised layers store weight/lr_mul: a checkpoint read under another multiplier would compute another
    function without any shape error, so resume names the key and the value to resume with."""
    torch.set_num_threads(1)
    Trainer(smoke_cfg(smoke_root, "TRAIN.TOTAL_KIMG=0.004"), tmp_path / "run", torch.device("cpu"),
            progress_bar=False).run()
    path = latest_checkpoint(tmp_path / "run")
    other = Trainer(smoke_cfg(smoke_root, "MODEL.LR_TEXT_MLP=1"), tmp_path / "run2", torch.device("cpu"),
                    progress_bar=False)
    with pytest.raises(ConfigError, match=r"MODEL.LR_TEXT_MLP = 0.01, this config has 1.*--set MODEL.LR_TEXT_MLP=0.01"):
        load_resume(other, path)
    same = Trainer(smoke_cfg(smoke_root), tmp_path / "run3", torch.device("cpu"), progress_bar=False)
    load_resume(same, path)   # the same multipliers load


def test_a_non_finite_generator_never_reaches_g_ema(smoke_root, tmp_path):
    """A G holding NaN (finite gradients can still overflow) is not averaged into G_ema: the step counts as
    skipped, so every checkpoint's G_ema stays usable."""
    trainer = Trainer(smoke_cfg(smoke_root), tmp_path, torch.device("cpu"), progress_bar=False)
    before = [t.clone() for t in trainer.G_ema.state_dict().values()]
    with torch.no_grad():
        next(trainer.G.parameters()).view(-1)[0] = float("nan")
    assert trainer.update_ema() is False
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.G_ema.state_dict().values()))
    with torch.no_grad():
        next(trainer.G.parameters()).view(-1)[0] = 0.0
    assert trainer.update_ema() is True


def test_nonfinite_losses_skip_updates_then_stop_with_a_checkpoint(smoke_root, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    nan = lambda *tensors: tensors[0].sum() * float("nan")
    monkeypatch.setattr(losses, "generator_adversarial_loss", nan)
    monkeypatch.setattr(losses, "path_lengths", lambda images, latents: nan(images) + 0 * latents.sum())
    trainer = Trainer(smoke_cfg(smoke_root, "TRAIN.MAX_NONFINITE_SKIPS=3"),
                      tmp_path, torch.device("cpu"), progress_bar=False)
    before = [p.detach().clone() for p in trainer.G.parameters()]
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps had non-finite losses"):
        trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))  # every G update skipped
    assert all(torch.isfinite(p).all() for p in trainer.D.parameters())
    assert latest_checkpoint(tmp_path) is not None
    assert "update skipped" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("weight", [0.0, 5.0])
def test_reconstruction_loss_alone_moves_the_generator_only_when_weighted(smoke_root, tmp_path, weight):
    torch.set_num_threads(1)
    cfg = smoke_cfg(smoke_root, f"TRAIN.RECON_WEIGHT={weight}", "TRAIN.CLIP_WEIGHT=0")
    trainer = Trainer(cfg, tmp_path, torch.device("cpu"), progress_bar=False)
    inputs = trainer.phase_batch(next(iter(trainer._loader())))
    before = [p.detach().clone() for p in trainer.G.parameters()]
    zero = lambda logit, cond: 0 * (logit.sum() + cond.sum())   # the adversarial term switched off
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(losses, "generator_adversarial_loss", zero)
        assert trainer.g_main(inputs)
    moved = [not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters())]
    assert any(moved) == (weight > 0)
    assert ("loss/recon" in trainer.stats) == (weight > 0)
    if weight:
        assert 0 < trainer.stats["loss/recon"][0] < 2   # a mean |fake - real| of images in [-1, 1]


def test_faded_reconstruction_loss_is_off_after_its_fade(smoke_root, tmp_path):
    torch.set_num_threads(1)
    cfg = smoke_cfg(smoke_root, "TRAIN.RECON_WEIGHT=5", "TRAIN.RECON_FADE_KIMG=0.1", "TRAIN.CLIP_WEIGHT=0")
    trainer = Trainer(cfg, tmp_path, torch.device("cpu"), progress_bar=False)
    inputs = trainer.phase_batch(next(iter(trainer._loader())))
    trainer.progress.nimg = 50
    assert trainer.g_main(inputs)
    assert len(trainer.stats["loss/recon"]) == 1
    trainer.progress.nimg = 100
    assert trainer.g_main(inputs)
    assert len(trainer.stats["loss/recon"]) == 1     # faded out: not computed any more


def test_lr_rampdown_sets_both_optimisers_from_the_image_counter(smoke_root, tmp_path):
    torch.set_num_threads(1)
    cfg = smoke_cfg(smoke_root, "TRAIN.TOTAL_KIMG=1", "TRAIN.LR_RAMPDOWN_KIMG=1", "TRAIN.LR_RAMPDOWN_FINAL=0.5")
    trainer = Trainer(cfg, tmp_path, torch.device("cpu"), progress_bar=False)
    start = {opt: opt.param_groups[0]["lr"] for opt in (trainer.opt_G, trainer.opt_D)}
    trainer.progress.nimg = 500          # half-way down the rampdown: factor 0.75
    trainer.train_step(next(iter(trainer._loader())))
    for opt, lr in start.items():
        assert opt.param_groups[0]["lr"] == pytest.approx(0.75 * lr)


def test_mode_seeking_pairs_each_condition_with_another_z_and_moves_the_generator(smoke_root, tmp_path):
    torch.set_num_threads(1)
    cfg = smoke_cfg(smoke_root, "TRAIN.MODE_SEEKING_WEIGHT=1", "TRAIN.MODE_SEEKING_CAP=100", "TRAIN.CLIP_WEIGHT=0",
                    "TRAIN.BATCH_SIZE=5")
    trainer = Trainer(cfg, tmp_path, torch.device("cpu"), progress_bar=False)
    inputs = trainer.phase_batch(next(iter(trainer._loader())))
    masks, feats = inputs.masks, inputs.feats
    seen = {}
    real_generate = trainer.nets.generate

    def spy(masks_in, feats_in, z, **kwargs):
        seen.update(masks=masks_in, words=feats_in.words, z=z[0])
        return real_generate(masks_in, feats_in, z, **kwargs)
    before = [p.detach().clone() for p in trainer.G.parameters()]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(losses, "generator_adversarial_loss", lambda logit, cond: 0 * (logit.sum() + cond.sum()))
        mp.setattr(trainer.nets, "generate", spy)
        assert trainer.g_main(inputs)
    # items 2, 3 repeat items 0, 1 (same mask and words, other z); the odd fifth item is kept
    assert torch.equal(seen["masks"][2:4], masks[:2]) and torch.equal(seen["masks"][4], masks[4])
    assert torch.equal(seen["words"][2:4], feats.words[:2])
    assert not torch.equal(seen["z"][:2], seen["z"][2:4])
    assert trainer.stats["loss/mode_seeking"][0] < 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))


@pytest.mark.parametrize("zones, caption", [(False, "she has blond hair and wears lipstick"),
                                             (True, "she has rosy cheeks and wears heavy makeup")])
def test_named_region_loss_reaches_the_generator_through_a_training_step(smoke_root, tmp_path, zones, caption):
    torch.set_num_threads(1)
    cfg = smoke_cfg(smoke_root, "TRAIN.RECON_NAMED_WEIGHT=10", "TRAIN.MODE_SEEKING_WEIGHT=1", "TRAIN.CLIP_WEIGHT=0",
                    "TRAIN.BATCH_SIZE=4", f"TRAIN.RECON_NAMED_ZONES={zones}",
                    f"TRAIN.RECON_ZONE_CHROMA_WEIGHT={int(zones)}", f"TRAIN.RECON_ZONE_NAMED_BOOST={9 * int(zones)}")
    trainer = Trainer(cfg, tmp_path, torch.device("cpu"), progress_bar=False)
    batch = next(iter(trainer._loader()))
    batch["caption"] = [caption] * 4             # every sample names two regions (with zones: cheeks, eyelids)
    before = [p.detach().clone() for p in trainer.G.parameters()]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(losses, "generator_adversarial_loss", lambda logit, cond: 0 * (logit.sum() + cond.sum()))
        trainer.train_step(batch)
    assert 0 < trainer.stats["loss/recon_named"][0] < 2
    weights = trainer.phase_batch(batch).zone_weights
    if zones:      # the make-up zone term runs beside it, on every face, the named cheeks and eyelids boosted
        assert weights.tolist() == [[1.0, 10.0, 10.0]] * 4
        assert 0 < trainer.stats["loss/recon_zone_chroma"][0] < 1
    else:
        assert "loss/recon_zone_chroma" not in trainer.stats and weights is None
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))


def test_named_zone_share_weighs_each_zone_by_how_often_the_training_captions_name_it(smoke_root):
    torch.set_num_threads(1)
    cfg = smoke_cfg(smoke_root, "TRAIN.RECON_ZONE_CHROMA_WEIGHT=1", "TRAIN.RECON_ZONE_NAMED_SHARE=0.6",
                    "TRAIN.BATCH_SIZE=4")
    trainer = Trainer(cfg, None, torch.device("cpu"), progress_bar=False)   # as main.py builds it: no run folder yet
    captions = [c for i in range(len(trainer.dataset)) for c in trainer.dataset.captions(i)]
    named = named_makeup_zones(captions).mean(0)
    assert torch.allclose(trainer.named_zone_weight, 0.6 / 0.4 * (1 - named) / named)
    batch = next(iter(trainer._loader()))
    batch["caption"] = ["she has rosy cheeks and wears lipstick", "he has black hair"] * 2
    weights = trainer.phase_batch(batch).zone_weights
    lips, cheeks, _ = trainer.named_zone_weight.tolist()
    assert torch.allclose(weights, torch.tensor([[lips, cheeks, 1.0], [1.0, 1.0, 1.0]] * 2))


def test_hard_negative_mismatches_name_an_attribute_the_face_lacks(smoke_root, tmp_path):
    """TRAIN.MISMATCH_HARD_NEGATIVES=1: each face that lacks a negatable attribute gets, as D's mismatched
    sentence, its own caption plus a sentence asserting one; the others keep the rotated caption; a step
    redraws the same ones (exact resume)."""
    torch.set_num_threads(1)
    trainer = Trainer(smoke_cfg(smoke_root, "TRAIN.MISMATCH_HARD_NEGATIVES=1", "TRAIN.BATCH_SIZE=4"), tmp_path,
                      torch.device("cpu"), progress_bar=False)
    batch = next(iter(trainer._loader()))
    captions, indices = list(batch["caption"]), batch["index"].tolist()
    wrong = trainer.phase_batch(batch).wrong
    assert torch.equal(wrong, trainer.phase_batch(batch).wrong)
    rotated = losses.rotate(trainer.text.encode(captions).sentence)
    hard = 0
    for k, (i, caption) in enumerate(zip(indices, captions)):
        options = [f"{caption} {sentence}" for sentence in trainer.hard_negatives.sentences[i]]
        if not options:
            assert torch.equal(wrong[k], rotated[k])
            continue
        encoded = trainer.text.encode(options).sentence
        assert any(torch.allclose(wrong[k], row, atol=1e-6) for row in encoded), caption
        hard += 1
    assert hard > 0
    plain = Trainer(smoke_cfg(smoke_root, "TRAIN.BATCH_SIZE=4"), tmp_path, torch.device("cpu"), progress_bar=False)
    assert plain.hard_negatives is None and torch.equal(plain.phase_batch(batch).wrong, rotated)


def test_bf16_autocast_trains_on_cpu(smoke_root, tmp_path, monkeypatch):
    """TRAIN.AMP=bf16 on CPU: every phase runs under autocast (D scores in bfloat16, R1's included; path length's
    generator pass too, in its modulated-activations form), and every step updates both networks with finite losses."""
    torch.set_num_threads(1)
    trainer = Trainer(smoke_cfg(smoke_root, "TRAIN.AMP=bf16", "TRAIN.TOTAL_KIMG=0.008", "TRAIN.SNAPSHOT_KIMG=0"),
                      tmp_path, torch.device("cpu"), progress_bar=False)
    seen = {"real": [], "r1": [], "pl": []}
    real_loss, r1_penalty, generate = losses.d_real_loss, losses.r1_penalty, trainer.nets.generate

    def record_real(logit, cond):
        seen["real"].append(logit.dtype)
        return real_loss(logit, cond)

    def record_r1(logit, inputs):
        seen["r1"].append(logit.dtype)
        return r1_penalty(logit, inputs)

    def record_generate(*args, return_latents=False, **kwargs):
        if return_latents:
            seen["pl"].append((torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None,
                               layers._modulating_activations))
        return generate(*args, return_latents=return_latents, **kwargs)

    monkeypatch.setattr(losses, "d_real_loss", record_real)
    monkeypatch.setattr(losses, "r1_penalty", record_r1)
    monkeypatch.setattr(trainer.nets, "generate", record_generate)
    finite, check = [], trainer._finite_or_skip
    monkeypatch.setattr(trainer, "_finite_or_skip", lambda *a: finite.append(check(*a)) or finite[-1])
    g_before = [p.detach().clone() for p in trainer.G.parameters()]
    d_before = [p.detach().clone() for p in trainer.D.parameters()]
    trainer.run()
    assert seen == {"real": [torch.bfloat16] * 4, "r1": [torch.bfloat16], "pl": [(torch.bfloat16, True)] * 2}
    assert "parameters, bfloat16 (TRAIN.AMP bf16)" in (tmp_path / "log.txt").read_text()    # the log says which
    assert trainer.progress.nimg == 8 and len(finite) == 4 + 1 + 4 + 2 and all(finite)
    assert all(torch.isfinite(p).all() for p in trainer.G.parameters())
    assert sum(not torch.equal(a, b) for a, b in zip(g_before, trainer.G.parameters())) > len(g_before) // 2
    assert sum(not torch.equal(a, b) for a, b in zip(d_before, trainer.D.parameters())) > len(d_before) // 2


def test_amp_auto_is_bf16_only_on_a_bf16_cpu_for_a_reference_width_generator(monkeypatch):
    """TRAIN.AMP=auto (the default): bf16 where sampling measured it faster (a CPU with bf16 units and
    MODEL.CHANNEL_MAX >= 256), float32 for narrower generators, CPUs without bf16 units and GPUs; fp16 autocasts
    the main phases only."""
    wide, narrow = load_config(None, []), load_config(None, ["MODEL.CHANNEL_MAX=32"])
    assert wide.TRAIN.AMP == "auto"
    cpu = torch.device("cpu")
    monkeypatch.setattr(generation, "cpu_has_bf16", lambda: True)
    assert phases.amp_dtype("auto", wide, cpu) is torch.bfloat16
    assert phases.amp_dtype("auto", narrow, cpu) is None
    assert phases.amp_dtype("auto", wide, torch.device("cuda")) is None
    assert phases.amp_dtype("none", wide, cpu) is None
    monkeypatch.setattr(generation, "cpu_has_bf16", lambda: False)
    assert phases.amp_dtype("auto", wide, cpu) is None
    main, reg = phases.autocasts("cpu", torch.float16)
    assert isinstance(main(), torch.autocast) and not isinstance(reg(), torch.autocast)
    main, reg = phases.autocasts("cpu", torch.bfloat16)
    assert isinstance(reg(), torch.autocast) and reg().fast_dtype is torch.bfloat16


def _ddp_worker(rank, world, port, root, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    from pixelface.core import distributed as dist
    dist.init("cpu")
    (Path(out) / "run").mkdir(exist_ok=True)
    trainer = Trainer(smoke_cfg(root, "TRAIN.SNAPSHOT_KIMG=0"), Path(out) / "run", torch.device("cpu"),
                      progress_bar=False)
    first_z = torch.randn(4).tolist()  # per-rank seeds: ranks must draw different noise
    trainer.run()
    torch.save({"fp": trainer.fingerprints(), "z": first_z}, Path(out) / f"rank{rank}.pt")
    dist.shutdown()


def test_two_gloo_processes_end_with_identical_networks(smoke_root, tmp_path):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(smoke_root), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["fp"] == r1["fp"]          # G, D and G_ema identical on both ranks
    assert r0["z"] != r1["z"]            # while each rank drew its own randomness
    # And training moved the networks away from their start.
    assert load_checkpoint(latest_checkpoint(tmp_path / "run"))["progress"]["nimg"] == 16


@pytest.mark.parametrize("batches, saved, now, expected", [
    (3, (4, 2), (4, 1), 6),     # 2 processes -> 1: the 24 images shown are 6 batches of the one process
    (6, (4, 1), (4, 2), 3),     # 1 -> 2: 24 images, dealt out rank by rank, are 3 batches per rank
    (5, (4, 1), (8, 2), 1),     # rounded down to whole new batches: images 16-19 come again
    (7, (4, 2), (4, 2), 7),     # unchanged
])
def test_resuming_with_another_world_size_or_batch_keeps_the_images_of_the_epoch(batches, saved, now, expected):
    assert reshard_position(batches, *saved, *now) == expected


def _final_state(run_dir: Path) -> dict:
    ckpt = load_checkpoint(latest_checkpoint(run_dir))
    return {k: ckpt[k] for k in ("G", "D", "G_ema", "opt_G", "opt_D", "progress")}


def _assert_same(a, b, where=""):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_sigkill_then_resume_matches_an_uninterrupted_run(smoke_root, tmp_path):
    length = ["--set", "TRAIN.TOTAL_KIMG=0.04"]  # 20 steps, a checkpoint every 2
    straight = run_main(smoke_root, tmp_path / "straight", *length)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    killed = run_main(smoke_root, tmp_path / "killed", *length)
    ckpts = tmp_path / "killed" / "smoke-00000" / "checkpoints"
    deadline = time.time() + 300
    while not (ckpts / "ckpt-000000012.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (ckpts / "ckpt-000000040.pt").exists(), "the run finished before it could be killed"

    resumed = run_main(smoke_root, tmp_path / "killed", *length, "--resume", "auto")
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert "resumed from" in log
    _assert_same(_final_state(tmp_path / "straight" / "smoke-00000"), _final_state(tmp_path / "killed" / "smoke-00000"))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGUSR1])
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(smoke_root, tmp_path, stop):
    """SIGTERM (kill, most schedulers) and SIGUSR1 (Slurm's warning before the time limit): a checkpoint, exit 0."""
    proc = run_main(smoke_root, tmp_path, "--set", "TRAIN.TOTAL_KIMG=1", "--set", "TRAIN.SNAPSHOT_KIMG=0")
    log_file = tmp_path / "smoke-00000" / "log.txt"
    deadline = time.time() + 300
    while not (log_file.exists() and "training to" in log_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(stop)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert f"stopped by {stop.name}" in out
    nimg = load_checkpoint(latest_checkpoint(tmp_path / "smoke-00000"))["progress"]["nimg"]
    assert 0 < nimg < 1000


def test_snapshot_minutes_checkpoint_on_wall_time(smoke_root, tmp_path):
    """TRAIN.SNAPSHOT_MINUTES: a checkpoint whenever that much wall time passed since the last one, with no kimg
    schedule at all (here 0.0001 min: after every step)."""
    torch.set_num_threads(1)
    cfg = smoke_cfg(smoke_root, "TRAIN.SNAPSHOT_KIMG=0", "TRAIN.SNAPSHOT_MINUTES=0.0001", "TRAIN.KEEP_CHECKPOINTS=100")
    Trainer(cfg, tmp_path, torch.device("cpu"), progress_bar=False).run()
    log = (tmp_path / "log.txt").read_text()
    steps = round(cfg.TRAIN.TOTAL_KIMG * 1000 / cfg.TRAIN.BATCH_SIZE)
    assert log.count("(0.0001 minutes since the last one)") >= steps - 1
    assert len(list((tmp_path / "checkpoints").glob("ckpt-*.pt"))) >= steps - 1


def test_periodic_evaluation_logs_metrics_and_keeps_the_best(smoke_root, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    cfg = smoke_cfg(smoke_root, "TRAIN.EVAL_KIMG=0.008", "TRAIN.EVAL_NUM=8", "TRAIN.EVAL_METRICS=[fid_clip, clip_score]")
    evaluate, calls, pause = trainer_module.evaluate_generator, [], 3.0

    def slow_first_evaluation(*args, **kwargs):      # a known cost, to see in which window it is counted
        calls.append(None)
        if len(calls) == 1:
            time.sleep(pause)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate_generator", slow_first_evaluation)
    Trainer(cfg, tmp_path, torch.device("cpu"), progress_bar=False).run()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in rows] == [0.008, 0.016]
    assert all({"fid_clip", "clip_score"} <= r.keys() for r in rows)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["progress"]
    assert best["best"] == min(r["fid_clip"] for r in rows)
    # the speed log: each window's training rate, with the evaluation that followed a log line (at
    # 0.008 kimg, with a sample grid and a snapshot) timed as the next window's maintenance
    stats = {r["kimg"]: r for r in map(json.loads, (tmp_path / "stats.jsonl").read_text().splitlines())}
    assert list(stats) == [0.004, 0.008, 0.012, 0.016]
    assert all(r["img_per_s"] > 0 and r["train_s"] > 0 and r["maintenance_s"] >= 0 for r in stats.values())
    assert stats[0.012]["maintenance_s"] >= pause and stats[0.012]["train_s"] < pause
    assert stats[0.008]["maintenance_s"] < pause and stats[0.016]["maintenance_s"] < pause


def test_throughput_leaves_maintenance_out_of_the_training_rate(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: clock[0])
    throughput = Throughput(nimg=40)
    clock[0] += 4.0                       # 4 s of training
    with throughput.maintenance():
        clock[0] += 30.0                  # an evaluation
    clock[0] += 6.0                       # 6 more s of training
    assert throughput.window(nimg=240) == {"img_per_s": 20.0, "train_s": 10.0, "maintenance_s": 30.0}
    clock[0] += 2.0                       # the next window starts where the last one ended
    assert throughput.window(nimg=260) == {"img_per_s": 10.0, "train_s": 2.0, "maintenance_s": 0.0}

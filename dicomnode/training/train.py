"""Train the pseudo-healthy U-Net on phantom pairs; checkpoint, then export the engine folder."""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dicomnode.engines.manifest import file_sha256
from dicomnode.training.data import SlicePool
from dicomnode.training.model import HU_WINDOW, PseudoHealthyUNet, load_weights, parameter_count

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOSS_LOG = "train_log.csv"


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 12
    crop: int = 160
    lr: float = 2e-3
    lesion_weight: float = 4.0
    pool_size: int = 160
    initial_studies: int = 16
    refresh_every: int = 12
    checkpoint_every: int = 100
    threads: int = 2
    seed: int = 0
    base_channels: int = 16
    # With subtle_hu > 0, lesions that change the slice by less than this (mean |HU| inside
    # their mask) weigh up to 4x more: a faint finding must be worth restoring, or L1 learns
    # to leave it alone. Off by default: it did not help the shipped network (see the card).
    subtle_hu: float = 0.0
    # With huber_hu > 0, errors smaller than this many HU cost quadratically (larger ones as
    # in L1). Plain L1 pulls every healthy pixel towards exactly zero change with the same
    # force as a lesion pixel towards its target, and healthy pixels outnumber a faint
    # infarct's thousands to one: the network learns to change nothing it is not sure of.
    # Near zero the quadratic pull fades, so the lesions' pull dominates what is learned.
    huber_hu: float = 0.0
    # Relative sampling weight per lesion kind (kinds not named weigh 1); None keeps the
    # uniform draw of the shipped runs.
    kind_weights: dict[str, float] | None = None
    init_weights: Path | None = None  # continue from a trained state dict (model.pt)
    mirrored: bool = False  # the network also sees the slice flipped left to right
    # Each study gets its own noise level, grain and kernel blur (data.TEXTURE_RANGES).
    vary_texture: bool = False
    # Healthy slices drawn from each third of a study's coverage besides the lesion's: more
    # show the network more skull base, where healthy heads gather most false evidence.
    healthy_slices: int = 1
    # Share of studies rendered at 512 and resampled to the model grid as the node does.
    scanner_matrix_share: float = 0.0
    # Each study's head pitched by up to this many degrees besides its drawn pose (data.extra_pitch).
    extra_pitch_deg: float = 0.0
    # Share of subdural studies whose blood is days or weeks old (data.subdural_age).
    older_subdurals: float = 0.0
    device: str = "cpu"  # a torch device: "cpu", "cuda", "cuda:1"
    render_workers: int = 0  # processes rendering phantoms ahead (0: in this process, between steps)


@dataclass
class TrainResult:
    model: PseudoHealthyUNet
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    studies: int = 0
    config: TrainConfig = field(default_factory=TrainConfig)


def loss_fn(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    lesion_weight: float,
    *,
    inputs: torch.Tensor | None = None,
    subtle_hu: float = 0.0,
    huber_hu: float = 0.0,
) -> torch.Tensor:
    """L1 everywhere, plus extra weight inside the (slightly dilated) lesion mask.

    With `huber_hu`, errors under that many HU cost e^2 / (2 huber_hu) instead (see TrainConfig).

    With `inputs` and `subtle_hu`, each item's lesion weight is multiplied by
    clamp(subtle_hu / contrast, 1, 4), contrast being the lesion's mean |input - target| in HU:
    L1 learns the conditional median, so a faint lesion is only restored when restoring it
    is worth more than the risk of rewriting healthy tissue that looks alike.
    """
    lesion = mask.float()
    area = lesion.sum(dim=(1, 2, 3), keepdim=True)
    boost = torch.ones_like(area)
    if inputs is not None and subtle_hu > 0:
        width = HU_WINDOW[1] - HU_WINDOW[0]
        contrast = ((inputs - target).abs() * lesion).sum(dim=(1, 2, 3), keepdim=True) * width
        contrast = contrast / area.clamp(min=1.0)
        boost = torch.where(area > 0, (subtle_hu / contrast.clamp(min=1e-3)).clamp(1.0, 4.0), boost)
    dilated = torch.nn.functional.max_pool2d(lesion, 5, stride=1, padding=2)
    weight = 1.0 + lesion_weight * boost * dilated
    if huber_hu > 0:
        beta = huber_hu / (HU_WINDOW[1] - HU_WINDOW[0])
        cost = torch.nn.functional.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    else:
        cost = (pred - target).abs()
    return (weight * cost).sum() / weight.sum()


def train(
    output_dir: Path,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    config: TrainConfig | None = None,
    pool: SlicePool | None = None,
    progress: bool = True,
    resume: bool = True,
) -> TrainResult:
    """Train for `steps` optimiser steps; checkpoints and a loss log go to `output_dir`."""
    cfg = config or TrainConfig()
    cfg.steps, cfg.batch_size, cfg.seed = steps, batch_size, seed
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"training device {cfg.device!r}: torch sees no CUDA GPU")
    torch.manual_seed(seed)
    model = PseudoHealthyUNet(cfg.base_channels, mirrored=cfg.mirrored)
    if cfg.init_weights is not None:
        load_weights(model, torch.load(cfg.init_weights, map_location="cpu", weights_only=True))
        logger.info("starting from the weights in %s", cfg.init_weights)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1.0 + math.cos(math.pi * min(s / max(steps, 1), 1.0))),
    )
    start_step = 0
    ckpt = output_dir / CHECKPOINT
    run_key: dict[str, object] = {
        "seed": seed,
        "batch_size": batch_size,
        "base_channels": cfg.base_channels,
        "init": file_sha256(cfg.init_weights) if cfg.init_weights is not None else None,
        "mirrored": cfg.mirrored,
        "lr": cfg.lr,
        "subtle_hu": cfg.subtle_hu,
        "huber_hu": cfg.huber_hu,
        "kind_weights": cfg.kind_weights,
        "vary_texture": cfg.vary_texture,
        "render_workers": cfg.render_workers > 0,  # another data stream than in-process rendering
        "pool": [cfg.pool_size, cfg.initial_studies, cfg.refresh_every],
    }
    if cfg.healthy_slices != 1:  # keyed only when set, so earlier runs' checkpoints still resume
        run_key["healthy_slices"] = cfg.healthy_slices
    if cfg.scanner_matrix_share:  # likewise
        run_key["scanner_matrix_share"] = cfg.scanner_matrix_share
    if cfg.extra_pitch_deg:  # likewise
        run_key["extra_pitch_deg"] = cfg.extra_pitch_deg
    if cfg.older_subdurals:  # likewise
        run_key["older_subdurals"] = cfg.older_subdurals
    state = torch.load(ckpt, map_location="cpu", weights_only=False) if resume and ckpt.is_file() else None
    if state is not None and state.get("run") != run_key:
        # A checkpoint of another run (other seed, batch, width, start or loss) would mix two runs.
        logger.warning("ignoring %s: it belongs to another run (%s)", ckpt, state.get("run"))
        state = None
        (output_dir / LOSS_LOG).unlink(missing_ok=True)
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        start_step = int(state["step"])
        logger.info("resuming from %s at step %d", ckpt, start_step)
    logger.info("training %d parameters for %d steps on %s", parameter_count(model), steps, device)
    own_pool = pool is None
    pool = pool or SlicePool(
        seed, cfg.pool_size, kind_weights=cfg.kind_weights, vary_texture=cfg.vary_texture,
        workers=cfg.render_workers, healthy_slices=cfg.healthy_slices,
        scanner_matrix_share=cfg.scanner_matrix_share, extra_pitch_deg=cfg.extra_pitch_deg,
        older_subdurals=cfg.older_subdurals,
    )
    # A pool made here is closed here (its render workers stopped); a caller's stays open.
    pool_scope = contextlib.closing(pool) if own_pool else contextlib.nullcontext()
    begin = time.monotonic()
    result = TrainResult(model, config=cfg)
    log_path = output_dir / LOSS_LOG
    with pool_scope, log_path.open("a", newline="") as log_file:
        while len(pool.studies) < cfg.initial_studies:
            pool.add()
        model.to(device)
        _optimiser_to(optimiser, device)
        log = csv.writer(log_file)
        bar = tqdm(
            range(start_step, steps), initial=start_step, total=steps, disable=not progress, desc="train"
        )
        model.train()
        for step in bar:
            if step and step % cfg.refresh_every == 0:
                pool.add()
            batch = pool.batch(cfg.batch_size, cfg.crop, full_width=cfg.mirrored)
            x, y, m = (torch.from_numpy(a).to(device, non_blocking=True) for a in batch)
            loss = loss_fn(
                model(x), y, m, cfg.lesion_weight,
                inputs=x, subtle_hu=cfg.subtle_hu, huber_hu=cfg.huber_hu,
            )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            value = float(loss.item())
            result.losses.append(value)
            log.writerow([step + 1, f"{value:.6f}", f"{time.monotonic() - begin:.1f}", pool.rendered])
            bar.set_postfix(loss=f"{np.mean(result.losses[-50:]):.4f}", studies=pool.rendered)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == steps:
                log_file.flush()
                _checkpoint(ckpt, model, optimiser, schedule, step + 1, run_key)
    model.cpu().eval()
    result.seconds = time.monotonic() - begin
    result.studies = pool.rendered
    return result


def _optimiser_to(optimiser: torch.optim.Optimizer, device: torch.device) -> None:
    """Move a (resumed) optimiser's state to `device`; AdamW's step counters stay where they are."""
    for state in optimiser.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)


def _checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    run: dict[str, object],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # survive a cleaned-out work folder
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimiser": optimiser.state_dict(),
            "schedule": schedule.state_dict(),
            "step": step,
            "run": run,
        },
        tmp,
    )
    tmp.replace(path)

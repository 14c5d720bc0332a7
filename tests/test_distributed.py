"""The rule under several processes (train/distributed.py), on the CPU with gloo and 2 ranks:
(a) alternate mode: steps on the animal source only leave every heads.person.* tensor and its optimizer state
bit-identical on both ranks; (b) mixed mode: one step over 2 ranks equals one process over the union of their
samples, also when the person head has samples on rank 0 only; (c) the ranks hold identical weights and buffers
after k steps; (d) the EMA and uncertainty weighting follow the rule; (f) `torchrun -m hydradet train` end to end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from conftest import CLI_FAST, make_batch, optimizer_state_of, snapshot, tiny_config, tiny_model

from hydradet.data.dataset import Batch
from hydradet.train.balance import build_balancer
from hydradet.train.distributed import Dist
from hydradet.train.ema import ModelEMA
from hydradet.train.optim import build_optimizer
from hydradet.train.step import train_step

WORLD = 2
# frozen BatchNorm: with batch statistics a rank's features depend on its own batch-mates only, which no
# distributed scheme makes equal to one process over the union (SyncBatchNorm would); the rule does not need it
CONFIG = ("model.backbone_norm=frozen", "train.optimizer=sgd", "train.lr=0.01", "train.momentum=0.9")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _share(batch: Batch, rank: int) -> Batch:
    """Rank `rank`'s samples of a global batch, as the trainer's SeededBatches gives them."""
    keep = list(range(rank, len(batch.sources), WORLD))
    return Batch(
        images=batch.images[keep],
        targets=[batch.targets[i] for i in keep],
        sources=[batch.sources[i] for i in keep],
        indices=[batch.indices[i] for i in keep],
        scales=[batch.scales[i] for i in keep],
        orig_sizes=[batch.orig_sizes[i] for i in keep],
    )


def _worker(rank: int, port: int, scenario: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        result = SCENARIOS[scenario](Dist(rank, WORLD, rank), Path(out))
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def _spawn(scenario: str, tmp_path: Path) -> list[dict]:
    mp.spawn(_worker, args=(_free_port(), scenario, str(tmp_path)), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# --- scenarios: run in each rank; return what the test compares ---------------------------------------------------


def _alternate_animals(dist: Dist, balance: str = "fixed") -> dict:
    cfg = tiny_config(*CONFIG, f"train.balance.method={balance}")
    model, balancer = tiny_model(cfg), build_balancer(cfg.train.balance, cfg.heads)
    opt, ema, sh = build_optimizer(model, cfg.train, balancer), ModelEMA(model, 0.9, 1.0), cfg.source_heads()
    mixed = make_batch(cfg, ["persons", "animals"] * 4, seed=1)
    ema.update(model, train_step(model, opt, _share(mixed, dist.rank), sh, 1.0, balancer, dist=dist))
    person = list(model.heads["person"].parameters())
    person += [balancer.log_var["person"]] if balance == "uncertainty" else []
    before = {
        "weights": snapshot(model.heads["person"]),
        "state": optimizer_state_of(opt, person),
        "ema": snapshot(ema.ema.heads["person"]),
        "ema_updates": ema.updates["person"],
        "s": [p.detach().clone() for p in balancer.parameters()],
    }
    for k in range(3):
        animals = make_batch(cfg, ["animals"] * 8, seed=10 + k)
        losses = train_step(model, opt, _share(animals, dist.rank), sh, 1.0, balancer, dist=dist)
        ema.update(model, losses)
        assert set(losses) == {"animal"}
    after = {
        "weights": snapshot(model.heads["person"]),
        "state": optimizer_state_of(opt, person),
        "ema": snapshot(ema.ema.heads["person"]),
        "ema_updates": ema.updates["person"],
        "s": [p.detach().clone() for p in balancer.parameters()],
    }
    return {
        "before": before,
        "after": after,
        "model": snapshot(model),
        "names": [n for n, _ in balancer.named_parameters()],
    }


def _mixed_one_step(dist: Dist) -> dict:
    cfg = tiny_config(*CONFIG, "train.balance.method=uncertainty")
    model, balancer = tiny_model(cfg), build_balancer(cfg.train.balance, cfg.heads)
    opt = build_optimizer(model, cfg.train, balancer)
    # rank 0 gets persons only, rank 1 animals only: the person head has samples on rank 0 alone
    batch = make_batch(cfg, ["persons", "animals"] * 2, seed=4)
    losses = train_step(model, opt, _share(batch, dist.rank), cfg.source_heads(), 1.0, balancer, dist=dist)
    ranks = [*range(WORLD)]
    return {"losses": losses, "model": snapshot(model), "s": snapshot(balancer), "ranks": ranks}


def _k_mixed_steps(dist: Dist) -> dict:
    cfg = tiny_config("model.backbone_norm=batch")  # trainable BatchNorm: its buffers must be kept in step too
    model = tiny_model(cfg)
    opt, sh = build_optimizer(model, cfg.train), cfg.source_heads()
    for k in range(3):
        batch = make_batch(cfg, ["persons", "animals", "both", "animals"] * 2, seed=20 + k)
        train_step(model, opt, _share(batch, dist.rank), sh, 1.0, dist=dist)
        dist.broadcast_buffers(model)  # as the trainer does after each step
    return {"model": snapshot(model), "running_fg": [float(h.running_fg) for h in model.heads.values()]}


def _sharded_evaluation(dist: Dist, out: Path) -> dict:
    from hydradet.config import load_config
    from hydradet.data.dataset import split_datasets
    from hydradet.eval.evaluate import evaluate

    cfg = load_config(
        out / "world" / "hydradet.yaml", ["model.backbone_weights=null", "model.imgsz=96", "eval.conf=0.0"]
    )
    model = tiny_model(cfg)
    return evaluate(
        model, cfg, split_datasets(cfg, "val"), torch.device("cpu"), None, (dist.rank, dist.world), dist.all_gather
    )


def _with_teacher_targets(cfg, batch: Batch) -> Batch:
    """Each sample gets, for the head its source does not label, a teacher's targets: one positive and, where the
    draw gives more boxes, ignore regions (train.pseudo; fixed boxes instead of a teacher model)."""
    drawn = make_batch(cfg, ["both"] * len(batch.sources), seed=7)
    for i, source in enumerate(batch.sources):
        for head in ("person", "animal"):
            if head not in cfg.source_heads()[source]:
                t = drawn.targets[i][head]
                batch.targets[i][head] = {"boxes": t["boxes"][:1], "labels": t["labels"][:1]}
                batch.targets[i][head] |= {"ignore": t["boxes"][1:], "ignore_labels": t["labels"][1:]}
    return batch


def _mixed_pseudo_step(dist: Dist | None) -> dict:
    cfg = tiny_config(*CONFIG)
    model = tiny_model(cfg)
    opt = build_optimizer(model, cfg.train)
    # rank 0: persons (the animal head taught there), rank 1: animals (the person head taught there)
    batch = _with_teacher_targets(cfg, make_batch(cfg, ["persons", "animals"] * 2, seed=4))
    batch = _share(batch, dist.rank) if dist is not None else batch
    losses = train_step(model, opt, batch, cfg.source_heads(), 1.0, dist=dist, pseudo_weight=0.5)
    return {
        "losses": losses,
        "model": snapshot(model),
        "running_fg": [float(h.running_fg) for h in model.heads.values()],
    }


SCENARIOS = {
    "alternate": lambda d, _: _alternate_animals(d),
    "alternate_uncertainty": lambda d, _: _alternate_animals(d, "uncertainty"),
    "mixed": lambda d, _: _mixed_one_step(d),
    "mixed_pseudo": lambda d, _: _mixed_pseudo_step(d),
    "k_steps": lambda d, _: _k_mixed_steps(d),
    "evaluate": _sharded_evaluation,
}


# --- tests ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["alternate", "alternate_uncertainty"])
def test_alternate_animal_steps_leave_the_person_head_bit_identical_on_every_rank(scenario: str, tmp_path: Path):
    for r in _spawn(scenario, tmp_path):
        b, a = r["before"], r["after"]
        assert all(torch.equal(b["weights"][k], a["weights"][k]) for k in b["weights"])
        assert all(torch.equal(b["ema"][k], a["ema"][k]) for k in b["ema"])  # (d) EMA
        assert b["ema_updates"] == a["ema_updates"] == 1
        for sb, sa in zip(b["state"], a["state"], strict=True):
            assert sb and all(torch.equal(sb[key], sa[key]) for key in sb)
        for name, sb, sa in zip(r["names"], b["s"], a["s"], strict=True):  # (d) uncertainty's s_i
            assert torch.equal(sb, sa) == name.endswith(".person"), name


def test_a_mixed_step_over_two_ranks_equals_one_process_over_the_union(tmp_path: Path, one_thread):
    ranks = _spawn("mixed", tmp_path)
    cfg = tiny_config(*CONFIG, "train.balance.method=uncertainty")
    model, balancer = tiny_model(cfg), build_balancer(cfg.train.balance, cfg.heads)
    opt = build_optimizer(model, cfg.train, balancer)
    losses = train_step(
        model, opt, make_batch(cfg, ["persons", "animals"] * 2, seed=4), cfg.source_heads(), 1.0, balancer
    )
    one = snapshot(model)
    for r in ranks:
        assert r["losses"].keys() == losses.keys()
        for h in losses:
            assert r["losses"][h] == pytest.approx(losses[h], rel=1e-5)
        # float sums in another order: equal to 1e-6 of the parameters' scale (measured max: ~1e-8)
        for k, v in one.items():
            assert torch.allclose(r["model"][k], v, rtol=1e-5, atol=1e-6), k
        s_one = snapshot(balancer)
        for k in s_one:
            assert torch.allclose(r["s"][k], s_one[k], rtol=1e-5, atol=1e-7), k
    # the person head (samples on rank 0 only) moved, identically on both ranks
    p0, p1 = (r["model"] for r in ranks)
    assert all(torch.equal(p0[k], p1[k]) for k in p0)


def test_a_step_with_teacher_targets_over_two_ranks_equals_one_process_over_the_union(tmp_path: Path, one_thread):
    """train.pseudo under several processes: each head's labelled and teacher rows share one normaliser whose
    positives are summed over the ranks, so two ranks take the step one process takes over the whole batch."""
    ranks = _spawn("mixed_pseudo", tmp_path)
    one = _mixed_pseudo_step(None)
    for r in ranks:
        assert r["losses"].keys() == one["losses"].keys() == {"person", "animal"}
        for h, v in one["losses"].items():
            assert r["losses"][h] == pytest.approx(v, rel=1e-5)
        assert r["running_fg"] == pytest.approx(one["running_fg"], rel=1e-6)
        for k, v in one["model"].items():
            assert torch.allclose(r["model"][k], v, rtol=1e-5, atol=1e-6), k


def test_ranks_hold_identical_weights_and_buffers_after_k_steps(tmp_path: Path):
    r0, r1 = _spawn("k_steps", tmp_path)
    assert r0["model"].keys() == r1["model"].keys()
    assert all(torch.equal(r0["model"][k], r1["model"][k]) for k in r0["model"])
    assert r0["running_fg"] == r1["running_fg"] and min(r0["running_fg"]) > 0


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(), reason="no torchrun"
)
def test_torchrun_trains_end_to_end_and_only_rank_0_writes(tmp_path: Path):
    from hydradet.cli import main

    world = tmp_path / "world"
    assert main(["synth", str(world), "--train-images", "8", "--val-images", "4", "--seed", "1"]) == 0
    args = [*CLI_FAST, "train.epochs=2", "train.steps_per_epoch=3", f"project={tmp_path / 'runs'}", "name=ddp"]
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", str(_free_port())]
    cmd += ["-m", "hydradet", "train", str(world / "hydradet.yaml"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp"]  # one run folder, not one per rank
    assert (run / "weights" / "best.safetensors").is_file() and (run / "weights" / "checkpoint.pt").is_file()
    assert done.stdout.count("summary of") == 1  # only rank 0 logs
    rows = (run / "results.csv").read_text().splitlines()
    assert len(rows) == 3


def test_a_two_rank_run_killed_mid_epoch_resumes_to_the_bit_identical_end_state(tmp_path: Path):
    """(e) torchrun with 2 gloo ranks, SIGKILL to the whole process group inside epoch 2, `--resume` with 2 ranks:
    the end state equals the uninterrupted 2-rank run's, bit for bit (test_resume.py's comparison)."""
    from test_resume import RUN, _assert_same_state, _kill_mid_epoch

    from hydradet.cli import main

    world = tmp_path / "world"
    assert main(["synth", str(world), "--train-images", "8", "--val-images", "4", "--seed", "5"]) == 0
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(*args: str) -> list[str]:
        return [*torchrun, "--master_port", str(_free_port()), "-m", "hydradet", "train", *args]

    args = [str(world / "hydradet.yaml"), *RUN, "train.workers=0", f"project={tmp_path}"]
    whole = subprocess.run(command(*args, "name=whole"), env=env, capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]
    _kill_mid_epoch(command(*args, "name=killed"), tmp_path / "killed", epoch=2, env=env)
    resumed = subprocess.run(command("--resume", str(tmp_path / "killed")), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_state(tmp_path / "whole", tmp_path / "killed")


def test_evaluation_sharded_over_two_ranks_equals_one_process(tmp_path: Path, one_thread):
    """Item 3: each rank evaluates every other image; the gathered metrics equal one process's, exactly."""
    from hydradet.cli import main
    from hydradet.config import load_config
    from hydradet.data.dataset import split_datasets
    from hydradet.eval.evaluate import evaluate

    assert main(["synth", str(tmp_path / "world"), "--train-images", "2", "--val-images", "7", "--seed", "2"]) == 0
    r0, r1 = _spawn("evaluate", tmp_path)
    cfg = load_config(
        tmp_path / "world" / "hydradet.yaml", ["model.backbone_weights=null", "model.imgsz=96", "eval.conf=0.0"]
    )
    one = evaluate(tiny_model(cfg), cfg, split_datasets(cfg, "val"), torch.device("cpu"))
    assert r0.keys() == r1.keys() == one.keys() and one["person"]["images"] == 7
    for head in one:  # equal up to NaN (a size with no object) and float noise of other batch compositions
        for r in (r0, r1):
            assert r[head] == pytest.approx(one[head], rel=1e-6, nan_ok=True), head


def test_what_several_processes_cannot_do_is_refused_before_any_work():
    from hydradet.errors import ConfigError
    from hydradet.train.distributed import check_distributable

    two = Dist(0, 2, 0)
    with pytest.raises(ConfigError, match=r"train\.batch: 5 is the global batch"):
        check_distributable(tiny_config("train.batch=5"), two, torch.device("cpu"))
    with pytest.raises(ConfigError, match="pcgrad"):
        check_distributable(tiny_config("train.balance.method=pcgrad"), two, torch.device("cpu"))
    with pytest.raises(ConfigError, match="syncbatch needs GPU processes"):
        check_distributable(tiny_config("model.backbone_norm=syncbatch"), two, torch.device("cpu"))
    check_distributable(tiny_config("train.batch=4"), two, torch.device("cpu"))  # fine

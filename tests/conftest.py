"""Small in-memory models and batches for the tests: two heads, three sources."""

from __future__ import annotations

import os

import pytest
import torch

from hydradet.config import Config, load_config
from hydradet.data.cache import CACHE_ENV
from hydradet.data.dataset import Batch
from hydradet.model.detector import HydraDetector

IMGSZ = 64
# Overrides that make a CLI training run on a synthetic world take seconds.
CLI_FAST = [
    "model.backbone=shufflenet_v2_x0_5",
    "model.backbone_weights=null",
    "model.imgsz=96",
    "model.neck_width=16",
    "train.batch=4",
]
CLI_FAST += ["train.workers=0", "eval.batch=8"]
# Pictures of the run (results.png, curves, batches) cost seconds per epoch; tests/test_run_pictures.py turns them on.
CLI_FAST += ["train.plots=false"]

TINY = {
    "heads": {
        "person": {"task": "detect", "classes": ["person"]},
        "animal": {"task": "detect", "classes": ["dog", "bird", "giraffe"]},
    },
    "sources": {
        "persons": {"format": "coco", "train": "p.json", "labels": {"person": {"person": "person"}}},
        "animals": {"format": "yolo", "train": "a.yaml", "labels": {"animal": {"dog": "dog", "bird": "bird"}}},
        "both": {
            "format": "coco",
            "train": "b.json",
            "labels": {"person": {"person": "person"}, "animal": {"dog": "dog", "giraffe": "giraffe"}},
        },
    },
}


@pytest.fixture(autouse=True, scope="session")
def _label_cache_in_a_temporary_folder(tmp_path_factory):
    """The label cache (data/cache.py) of every test's data in the session's temporary folder, never in ~/.cache
    (subprocesses, e.g. torchrun and CLI runs, inherit it)."""
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("label_cache"))
    yield
    if before is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture
def one_thread():
    """Small models on a busy 2-core machine: a second OpenMP thread only waits (up to 20x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(*overrides: str) -> Config:
    base = (
        "model.backbone=resnet18",
        "model.backbone_weights=null",
        f"model.imgsz={IMGSZ}",
        "model.neck_width=16",
        "train.workers=0",
    )
    return load_config(TINY, [*base, *overrides], check_paths=False)


def tiny_model(cfg: Config, seed: int = 0) -> HydraDetector:
    torch.manual_seed(seed)
    return HydraDetector(cfg.model, cfg.heads)


def make_batch(cfg: Config, sources: list[str], seed: int = 0) -> Batch:
    """Random images; each sample gets 1-3 random boxes for every head its source labels."""
    g = torch.Generator().manual_seed(seed)
    targets = []
    for src in sources:
        per_head = {}
        for head in cfg.sources[src].labels:
            n = int(torch.randint(1, 4, (1,), generator=g))
            xy = torch.rand(n, 2, generator=g) * IMGSZ * 0.6
            wh = 8 + torch.rand(n, 2, generator=g) * IMGSZ * 0.4
            labels = torch.randint(0, len(cfg.heads[head].classes), (n,), generator=g)
            per_head[head] = {"boxes": torch.cat([xy, (xy + wh).clamp(max=IMGSZ)], 1), "labels": labels}
        targets.append(per_head)
    n = len(sources)
    return Batch(
        images=torch.rand(n, 3, IMGSZ, IMGSZ, generator=g),
        targets=targets,
        sources=list(sources),
        indices=list(range(n)),
        scales=[1.0] * n,
        orig_sizes=[(IMGSZ, IMGSZ)] * n,
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def optimizer_state_of(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> list[dict]:
    return [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in optimizer.state[p].items()} for p in params]


def assert_alternate_steps_leave_person_untouched(cfg: Config, model: HydraDetector, balancer=None) -> None:
    """The rule under any training control: after a mixed step (so the person head has optimizer state), steps
    on animals only leave the person head's weights, optimizer state and balancing parameters bit-identical."""
    from hydradet.train.optim import build_optimizer
    from hydradet.train.step import train_step

    opt = build_optimizer(model, cfg.train, balancer)
    sh = cfg.source_heads()
    train_step(model, opt, make_batch(cfg, ["persons", "animals"] * 2, seed=1), sh, 0.0, balancer)
    person_params = list(model.heads["person"].parameters())
    balance_params = [p for n, p in balancer.named_parameters() if n.endswith(".person")] if balancer else []
    tracked = person_params + balance_params
    before, state_before = [p.detach().clone() for p in tracked], optimizer_state_of(opt, tracked)
    assert all(s for s in state_before), "person head should have optimizer state after its own step"
    animal_before = snapshot(model.heads["animal"])
    for k in range(3):
        losses = train_step(model, opt, make_batch(cfg, ["animals"] * 4, seed=10 + k), sh, 1.0, balancer)
        assert set(losses) == {"animal"}
        assert all(p.grad is None for p in tracked)
    for b, p in zip(before, tracked, strict=True):
        assert torch.equal(b, p.detach())
    for sb, sa in zip(state_before, optimizer_state_of(opt, tracked), strict=True):
        assert sb.keys() == sa.keys()
        for key in sb:
            assert torch.equal(torch.as_tensor(sb[key]), torch.as_tensor(sa[key])), key
    after = snapshot(model.heads["animal"])
    assert any(not torch.equal(animal_before[k], after[k]) for k in after), "the animal head should have trained"

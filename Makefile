# The two commands a new user runs: `make demo` and `make test`. Both create .venv themselves.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: demo test lint venv clean bench bench-real

venv: $(VENV_STAMP)

# pip, not uv/poetry: pip takes this machine's local torch wheels; a resolver may fetch another torch.
$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, torchvision, hydradet, pycocotools, safetensors, pydantic"
	touch $(VENV_STAMP)

demo: venv
	$(PY) -m hydradet.demo

# The issue-4 benchmarks at their defaults (~30 min + a few minutes on 2 cores; BENCHMARKS.md). YOLO11n rows need
# the benchmark-only extra: .venv/bin/pip install -e '.[bench]' (without it they are skipped with a note).
# The defaults share the tower; per-head towers (FCOS's layout) are measured beside them.
PER_HEAD_TOWERS := model.shared_convs=0,model.head_convs=2

bench: venv
	$(PY) benchmarks/partial_labels.py --variant "hydradet per-head towers:$(PER_HEAD_TOWERS)" --out runs/bench/partial_labels
	$(PY) benchmarks/heads_scaling.py --variant "default:" --variant "per-head towers:$(PER_HEAD_TOWERS)" --out runs/bench/heads_scaling

# The real-photo benchmark (../shared/data): hydradet vs merged vs separate, each row trained with the default recipe
# (BENCHMARKS.md). About 1.5 h on 2 cores; `--quick` (seeded subsets, fewer epochs) for iterating.
bench-real: venv
	$(PY) benchmarks/real_partial.py --out runs/bench/real_partial

lint: venv
	.venv/bin/ruff check hydradet tests benchmarks
	.venv/bin/ruff format --check hydradet tests benchmarks

test: venv lint
	$(PY) -m pytest -q

clean:
	rm -rf runs demo_data .pytest_cache

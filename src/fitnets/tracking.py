"""Experiment tracking: optional sinks fed the same per-epoch records as ``metrics.jsonl``.

``metrics.jsonl`` stays the source of truth; a sink gets each record as it is appended,
every number under ``<stage>[:pair]/<key>`` (``hints:0/val_hint_loss``, ``kd/lambda``).

- ``tracking=mlflow`` (``pip install 'fitnets[mlflow]'``): the tracking URI of
  ``MLFLOW_TRACKING_URI``, else a file store in ``RUN_DIR/mlruns``; experiment "fitnets", a
  run named after the run directory, the resolved config as parameters, each record's
  numbers as metrics at step = epoch.
- ``tracking=wandb`` (``pip install 'fitnets[wandb]'``): project ``WANDB_PROJECT`` or
  "fitnets", files under ``RUN_DIR/wandb``, the mode the user set (``WANDB_MODE=offline``
  works without a network), the config, each record as one step.

A resumed run continues the same tracking run (its id is kept in ``RUN_DIR/tracking.json``).
Epochs logged after the checkpoint a run resumes from are logged again (with the same
values, the resume being exact): MLflow then holds both, W&B keeps the first.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from fitnets.errors import FitnetsError

KINDS = ("none", "mlflow", "wandb")


def numbers(record: dict) -> dict[str, float]:
    """The record's numbers as ``<stage>[:pair]/<key>`` (epoch and pair are the step)."""
    stage = record["stage"] + (f":{record['pair']}" if "pair" in record else "")
    return {f"{stage}/{k}": float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("epoch", "pair")}


def _flat(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, list) else str(v)
    return out


def _ids(run_dir: Path) -> dict:
    path = run_dir / "tracking.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _keep_id(run_dir: Path, kind: str, run_id: str) -> None:
    ids = _ids(run_dir)
    ids[kind] = run_id
    (run_dir / "tracking.json").write_text(json.dumps(ids) + "\n")


def _import(kind: str):
    try:
        return __import__(kind)
    except ImportError:
        raise FitnetsError(f"tracking={kind} needs the {kind} package: pip install "
                           f"'fitnets[{kind}]' (or set tracking=none).") from None


class MLflowSink:
    def __init__(self, run_dir: Path, config: dict):
        mlflow = self.mlflow = _import("mlflow")
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a local file store beside the run (MLflow 3 asks for an explicit opt-in)
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("fitnets")
        known = _ids(run_dir).get("mlflow")
        self.run = mlflow.start_run(run_id=known) if known else mlflow.start_run(
            run_name=run_dir.name)
        if not known:
            _keep_id(run_dir, "mlflow", self.run.info.run_id)
            mlflow.log_params(_flat(config))

    def log(self, record: dict) -> None:
        self.mlflow.log_metrics(numbers(record), step=int(record["epoch"]))

    def close(self) -> None:
        self.mlflow.end_run()


class WandbSink:
    def __init__(self, run_dir: Path, config: dict, step: int):
        wandb = _import("wandb")
        run_id = _ids(run_dir).get("wandb") or uuid.uuid4().hex[:8]
        _keep_id(run_dir, "wandb", run_id)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fitnets"), id=run_id,
                              resume="allow", dir=str(run_dir), name=run_dir.name,
                              config=config)
        self.step = step  # records logged so far: W&B's steps must only grow

    def log(self, record: dict) -> None:
        self.run.log(numbers(record), step=self.step)
        self.step += 1

    def close(self) -> None:
        self.run.finish()


def open_sink(kind: str, run_dir: Path, config: dict, logged: int) -> Callable | None:
    """The sink of ``tracking=kind`` (None for none); ``logged``: records already in
    metrics.jsonl (a resumed run)."""
    if kind == "none":
        return None
    if kind == "mlflow":
        return MLflowSink(Path(run_dir), config)
    if kind == "wandb":
        return WandbSink(Path(run_dir), config, logged)
    raise FitnetsError(f"tracking={kind!r}: choose one of {', '.join(KINDS)}.")

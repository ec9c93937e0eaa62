"""Benchmark: the data stages of the demo (resample + cubes on the phantom, in the demo's
shards) with whatever ``pcrl`` is first on the path, to measure what recording and verifying
``contents.json`` (pcrl.records) costs: run it once with this tree and once with a tree
before the records, on the same machine, and compare the seconds.

    PYTHONPATH=. python benchmarks/bench_records.py --work /tmp/bench --repeats 3
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from pcrl.stages.cubes import run_cubes
from pcrl.stages.download import run_download
from pcrl.stages.resample import run_resample

TASKS = {"pretrain": "luna16", "ncc": "luna16", "lcs": "msd_liver", "bms": "msd_brain",
         "pretrain2d": "chestxray14", "chest14": "chestxray14"}


def _supported(function: Any, **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments ``function`` takes (an older tree lacks ``dataset``, ``shards``)."""
    names = inspect.signature(function).parameters
    return {k: v for k, v in kwargs.items() if k in names}


def data_stages(params: dict[str, Any], work: Path) -> float:
    """Seconds of resample (every dataset and shard) + cubes (every task), downloads excluded."""
    shards = len(params["data"]["shards"])
    for name in ("interim", "processed"):
        shutil.rmtree(work / name, ignore_errors=True)
    start = time.perf_counter()
    for dataset in sorted(set(TASKS.values())):
        for k in range(shards):
            run_resample(params["resample"][dataset], raw=work / "raw" / dataset,
                         out=work / "interim" / dataset / str(k), shard=(k, shards), progress=False,
                         **_supported(run_resample, dataset=dataset, shards=shards))
    for task, dataset in TASKS.items():
        run_cubes(task, params["cubes"][task], seed=params["cubes"]["seed"], raw=work / "raw" / dataset,
                  interim=work / "interim" / dataset, out=work / "processed" / task, progress=False,
                  **_supported(run_cubes, shards=shards))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--work", required=True, help="scratch folder (replaced)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = yaml.safe_load(Path(args.params).read_text())
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    shards = len(params["data"]["shards"])
    for dataset in sorted(set(TASKS.values())):
        for k in range(shards):
            run_download(dataset, params["data"], out=work / "raw" / dataset / str(k), shard=(k, shards),
                         progress=False)
    seconds = [data_stages(params, work) for _ in range(args.repeats)]
    print(json.dumps({"seconds": seconds, "median": statistics.median(seconds)}))


if __name__ == "__main__":
    main()

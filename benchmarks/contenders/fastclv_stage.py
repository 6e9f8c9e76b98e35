"""Run one fastclv stage alone, through the pipeline's own stage function, in this process.

The stages are the functions ``fastclv run`` chains (``fastclv.pipeline``): ``extract_stage``
(CSV -> validated Parquet + rejects), ``transform_stage`` (historical columns + the predictive
model -> customer_ltv.parquet), ``verify_stage`` (the DuckDB cross-check) and ``load_stage``
(ADBC COPY + partition swap). Each needs the files the stages before it staged: the
harness copies a finished run's staging folder first. The stage's result is written as
JSON to ``--result`` so the harness can check it, with the seconds the stage function
took (no interpreter start or imports). Run::

    python -m benchmarks.contenders.fastclv_stage extract --input DIR --staging DIR \
        --as-of 2025-12-31 --result out.json
"""

from __future__ import annotations

import os

# As `fastclv run` does (fastclv.cli.main), before numpy is imported: the model's small
# optimisation steps are slower with a multithreaded BLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import json
import time
from datetime import date
from pathlib import Path

from fastclv import pipeline
from fastclv.config import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=("extract", "transform", "verify", "load"))
    parser.add_argument("--input", required=True)
    parser.add_argument("--staging", required=True)
    parser.add_argument("--as-of", type=date.fromisoformat, required=True)
    parser.add_argument("--pg-uri")
    parser.add_argument("--schema", default="public")
    parser.add_argument(
        "--summary", type=Path, help="a finished run's summary.json (verify needs its counts)"
    )
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    settings = Settings(
        input=args.input,
        staging=args.staging,
        as_of=args.as_of,
        pg_uri=args.pg_uri,
        pg_schema=args.schema,
        load=args.stage == "load",
        run_id="bench",
    )
    result: object
    started = time.perf_counter()
    if args.stage == "extract":
        result = pipeline.extract_stage(settings)
    elif args.stage == "transform":
        result = dataclasses.asdict(pipeline.transform_stage(settings))
    elif args.stage == "verify":
        summary = json.loads(args.summary.read_text()) if args.summary else {}
        result = pipeline.verify_stage(settings, summary.get("files", {}), summary.get("model"))
    else:
        result = pipeline.load_stage(settings)
    seconds = time.perf_counter() - started
    out = {"seconds": seconds, "result": result}
    args.result.write_text(json.dumps(out, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    main()

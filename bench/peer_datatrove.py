"""The peer pipeline for `make bench`: datatrove reading Parquet, fastText on every document, writing Parquet.

Runs in bench/work/peer-venv (datatrove is installed there only, never into the project).
Uses the project's shipped fastText depiction model on every document, one task, one worker.

Usage: peer_datatrove.py SHARD_DIR MODEL.ftz WORK_DIR
"""

import sys

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import FastTextClassifierFilter
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter

shards, model, work = sys.argv[1:4]
LocalPipelineExecutor(
    pipeline=[
        ParquetReader(shards, glob_pattern="*.parquet", text_key="text", id_key="id"),
        FastTextClassifierFilter(model, remove_labels=[("malevolent", 0.5)], save_labels_in_metadata=False),
        ParquetWriter(f"{work}/out"),
    ],
    tasks=1,
    workers=1,
    logging_dir=f"{work}/logs",
).run()

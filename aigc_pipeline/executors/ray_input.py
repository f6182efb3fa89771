"""The Ray executor's input: the rows of the input file, read by a Ray Data read task, not the driver.

A streaming run on Ray (executor.execute hands the backend a `ChunkFeed` whose `origin` is the
identified rows of an input file) becomes a Ray Dataset read by `InputDatasource`: one read task
opens the file on a worker and runs the engine's own reader on it (`sources.stream_rows`: the same
checks, line numbers and rejected rows as a local run) and its row identities (`identify_rows`:
occurrence numbers and duplicate keys need the rows in order, so one task reads one file), and
yields the item states in blocks of `ROWS_PER_BLOCK` as it goes (on the driver's node). The
driver never holds the rows: finished blocks come back in input order and are written as they come.

Ray Data's own `read_csv`/`read_json` parse with Arrow, which numbers no lines, fails a whole
file on one bad JSON line and infers column types (so values and errors would differ from a local
run); `read_parquet` would need the same checks and numbering after it. Reading with the engine's
reader inside a Ray Data datasource keeps the results and line numbers identical.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from ..errors import AigcError
from ..records import ItemState
from ..row_identity import IdentifiedRows, identify_rows
from ..sources import RowStream, stream_rows

ROWS_PER_BLOCK = 64  # as executors/ray.py: an item is marked done a block at a time


def input_file(origin: Any) -> tuple[RowStream, list[str] | None] | None:
    """(the input file's rows, the pipeline's key) when `origin` (ChunkFeed.origin) comes from a
    file a worker can read again; None for rows handed over in memory (the Python API)."""
    identified = getattr(origin, "rows", None)
    if isinstance(identified, IdentifiedRows) and isinstance(identified.rows, RowStream):
        return identified.rows, identified.key
    return None


def read_input(ray: Any, rows: RowStream, key: list[str] | None) -> Any:
    """A Ray Dataset of the input's item states (records: index, state, failure), in input order.

    The read task runs on the driver's node, where the engine found the file (a driver outside
    the cluster, `ray://`, needs the file where the head node sees it). It reserves no CPU:
    it runs as long as the dataset, a block ahead of the stages (Ray Data's backpressure), so a
    CPU held by it would leave a 2-CPU machine with a model actor and no CPU for other stages."""
    return ray.data.read_datasource(_datasource(rows, key), override_num_blocks=1, num_cpus=0)


def _datasource(rows: RowStream, key: list[str] | None) -> Any:
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class InputDatasource(Datasource):  # type: ignore[misc]
        """One read task: the engine's reader over the whole file, on a worker."""

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        @property
        def supports_distributed_reads(self) -> bool:
            return False  # Ray then reads on the driver's node: the file is where the driver found it

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[Any]:
            read = partial(read_blocks, rows.path.resolve(), dict(rows.columns), key, rows.total)
            metadata = BlockMetadata(num_rows=rows.total, size_bytes=None, input_files=(str(rows.path),),
                                     exec_stats=None)
            return [ReadTask(read, metadata)]

    return InputDatasource()


def read_blocks(path: Path, columns: dict[str, str], key: list[str] | None, total: int) -> Iterator[Any]:
    """On a worker: the checked, identified rows of `path` as item states, a block at a time. An
    input unreadable half-way ends with a block that carries the error (the driver raises it)."""
    import pyarrow as pa

    column_keys = {column: f"inputs.{column}" for column in columns}
    rows = identify_rows(stream_rows(path, columns, total), key)
    while True:
        states: list[ItemState] = []
        try:
            for row in islice(rows, ROWS_PER_BLOCK):
                states.append(ItemState(row, column_keys))
        except AigcError as exc:  # identify_rows yields every row read before an error, then raises it
            yield _block(pa, [state.index for state in states] + [-1], [pickle.dumps(s) for s in states] + [b""],
                         [b""] * len(states) + [pickle.dumps(exc)])
            return
        if not states:
            return
        yield _block(pa, [state.index for state in states], [pickle.dumps(s) for s in states], [b""] * len(states))


def _block(pa: Any, indexes: list[int], states: list[bytes], failures: list[bytes]) -> Any:
    return pa.table({"index": pa.array(indexes, pa.int64()), "state": pa.array(states, pa.binary()),
                     "failure": pa.array(failures, pa.binary())})

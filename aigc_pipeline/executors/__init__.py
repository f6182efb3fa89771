"""Executor backends: how a run plan's stages are driven over the items.

`local` (the default) runs in this process, one thread per stage; `ray` (`--executor ray`, the
optional `ray` extra) runs the same plan as Ray Data steps on a Ray cluster. Every backend follows the
`aigc_pipeline.records.ExecutorBackend` protocol and reuses `StageRunner` for the per-batch work,
so outputs are the same item for item whichever backend runs them.
"""

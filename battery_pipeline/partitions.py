"""Partitions: one per cell (cycler data) and one per pack (telemetry).

Dynamic, because cells arrive as files do: discovery (the runner, the sensor, or the
`register_sources` job) adds a partition for every cell source it finds.
"""

from dagster import DynamicPartitionsDefinition

cell_partitions = DynamicPartitionsDefinition(name="cells")
pack_partitions = DynamicPartitionsDefinition(name="packs")


def batch_ranges(ordered: list[str], keys: list[str], max_size: int | None = None) -> list[tuple[str, str, list[str]]]:
    """`keys` as contiguous runs of the partition order `ordered`: [(first, last, members)]. A
    run over a partition range (a single-run backfill) covers exactly one such run of keys.
    `max_size`: no range longer than that (a cluster's runs, `executors.cells_per_run`)."""
    wanted, ranges, current = set(keys), [], []
    for key in ordered:
        if key in wanted:
            current.append(key)
            if max_size is not None and len(current) == max_size:
                ranges.append(current)
                current = []
        elif current:
            ranges.append(current)
            current = []
    if current:
        ranges.append(current)
    return [(r[0], r[-1], r) for r in ranges]

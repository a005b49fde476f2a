"""Partitions: one per cell (cycler data) and one per pack (telemetry).

Dynamic, because cells arrive as files do: discovery (the runner, the sensor, or the
`register_sources` job) adds a partition for every cell source it finds.
"""

from dagster import DynamicPartitionsDefinition

cell_partitions = DynamicPartitionsDefinition(name="cells")
pack_partitions = DynamicPartitionsDefinition(name="packs")


def batch_ranges(ordered: list[str], keys: list[str]) -> list[tuple[str, str, list[str]]]:
    """`keys` as contiguous runs of the partition order `ordered`: [(first, last, members)]. A
    run over a partition range (a single-run backfill) covers exactly one such run of keys."""
    wanted, ranges, current = set(keys), [], []
    for key in ordered:
        if key in wanted:
            current.append(key)
        elif current:
            ranges.append(current)
            current = []
    if current:
        ranges.append(current)
    return [(r[0], r[-1], r) for r in ranges]

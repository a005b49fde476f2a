"""Partitions: one per cell (cycler data) and one per pack (telemetry).

Dynamic, because cells arrive as files do: discovery (the runner, the sensor, or the
`register_sources` job) adds a partition for every cell source it finds.
"""

from dagster import DynamicPartitionsDefinition

cell_partitions = DynamicPartitionsDefinition(name="cells")
pack_partitions = DynamicPartitionsDefinition(name="packs")

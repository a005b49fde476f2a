"""Where pack telemetry is found: the pack-side counterpart of `resources.SourceCatalog`.

Environment variables (all optional):
  BATTERY_PIPELINE_PACK_DIRS       pack folders, os.pathsep-separated (default: data/packs)
  BATTERY_PIPELINE_DEMO_PACK_DIR   demo packs, written on first use (default: data/demo_packs)
  BATTERY_PIPELINE_TWIN_CELLS      cell partitions to run the twin on as one-cell packs,
                                   comma-separated (default: none)

Pack files live in their own folders, apart from the cycler files of `data/incoming`: the cell
discovery would otherwise take every pack file (and its ground-truth companions) for a cell.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from battery_pipeline.resources import DATA_DIR
from battery_pipeline.science.twin import packs


def default_pack_dirs() -> list[str]:
    raw = os.environ.get("BATTERY_PIPELINE_PACK_DIRS")
    if raw:
        return [p for p in raw.split(os.pathsep) if p]
    return [str(DATA_DIR / "packs")]


def default_demo_pack_dir() -> str:
    return os.environ.get("BATTERY_PIPELINE_DEMO_PACK_DIR", str(DATA_DIR / "demo_packs"))


def default_twin_cells() -> list[str]:
    return [c.strip() for c in os.environ.get("BATTERY_PIPELINE_TWIN_CELLS", "").split(",") if c.strip()]


class PackSourceCatalog(ConfigurableResource):
    """Pack telemetry files in the pack folders (the demo packs when there are none), and the
    cells to treat as one-cell packs."""

    pack_dirs: list[str] = Field(default_factory=default_pack_dirs)
    demo_pack_dir: str = Field(default_factory=default_demo_pack_dir)
    use_demo_when_empty: bool = True
    twin_cells: list[str] = Field(default_factory=default_twin_cells)

    def roots(self) -> list[Path]:
        roots = [Path(d) for d in self.pack_dirs]
        has_files = any(p.is_file() for root in roots if root.is_dir() for p in root.rglob("*"))
        if self.use_demo_when_empty and not has_files:
            return [packs.ensure_demo_packs(Path(self.demo_pack_dir))]
        return roots

    def discover(self) -> packs.PackCatalog:
        return packs.discover_packs(self.roots(), self.twin_cells)

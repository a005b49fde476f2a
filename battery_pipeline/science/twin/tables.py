"""A twin model's outputs as warehouse tables, and back (pure pandas; the storage is elsewhere).

Every output names its table in the model's manifest (`outputs.<name>.table`, defaults in
manifest.py). Layouts, one partition per pack (`pack_id`):

  series outputs   one row per sample:          pack_id, sample, time_s, <output>, ...
  columns outputs  one row per sample and cell: pack_id, sample, time_s, cell_id, <output>, ...
  records outputs  one row per record:          pack_id, record, <the record's columns>

`sample` is the sample's position in the pack's telemetry (the index of the frame the models
read), so every per-sample row joins back to its telemetry sample and source row. Long layouts
hold packs of any cell count in one table. `tables_to_outputs` rebuilds exactly what the model
returned, so that a model that depends on another reads its stored outputs (one asset per model).
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from battery_pipeline.science.twin.manifest import Manifest, OutputSpec

PACK_KEY = "pack_id"
SAMPLE_KEY = "sample"
CELL_KEY = "cell_id"
RECORD_KEY = "record"
_KEY_COLUMNS = {PACK_KEY, SAMPLE_KEY, "time_s", CELL_KEY, RECORD_KEY}


def output_tables(manifest: Manifest) -> dict[str, list[OutputSpec]]:
    """table -> the outputs it stores, in manifest order."""
    tables: dict[str, list[OutputSpec]] = {}
    for spec in manifest.outputs.values():
        tables.setdefault(spec.table, []).append(spec)
    return tables


def table_kind(specs: list[OutputSpec]) -> str:
    return specs[0].kind  # manifest.py guarantees one kind per table


def outputs_to_tables(manifest: Manifest, outputs: Mapping[str, pd.Series | pd.DataFrame], pack_id: str,
                      time_s: pd.Series) -> dict[str, pd.DataFrame]:
    """The outputs of one run in their table layouts. `time_s` is indexed like the model's
    input data (the sample numbers), and gives each per-sample row its time."""
    frames = {}
    for table, specs in output_tables(manifest).items():
        kind = table_kind(specs)
        if kind == "series":
            frame = pd.DataFrame({spec.name: outputs[spec.name] for spec in specs}, index=time_s.index)
            frame.insert(0, "time_s", time_s.to_numpy())
            frame.insert(0, SAMPLE_KEY, time_s.index.to_numpy(dtype="int64"))
        elif kind == "columns":
            frame = None
            for spec in specs:
                value = outputs[spec.name]
                long = value.rename_axis(index=SAMPLE_KEY, columns=CELL_KEY).stack(future_stack=True)
                long = long.rename(spec.name).reset_index()
                frame = long if frame is None else frame.merge(long, on=[SAMPLE_KEY, CELL_KEY], how="outer", sort=False)
            frame[CELL_KEY] = frame[CELL_KEY].astype(str)
            frame.insert(1, "time_s", time_s.reindex(frame[SAMPLE_KEY].to_numpy()).to_numpy())
            frame[SAMPLE_KEY] = frame[SAMPLE_KEY].astype("int64")
        else:
            (spec,) = specs
            frame = outputs[spec.name].reset_index(drop=True)
            clash = sorted(_KEY_COLUMNS & set(frame.columns))
            if clash:
                raise ValueError(f"model {manifest.name!r}: output {spec.name!r} has column {clash[0]!r}, "
                                 "which its table uses as a key")
            frame.insert(0, RECORD_KEY, range(len(frame)))
            frame[RECORD_KEY] = frame[RECORD_KEY].astype("int64")
        frame.insert(0, PACK_KEY, pack_id)
        frames[table] = frame.reset_index(drop=True)
    return frames


def tables_to_outputs(manifest: Manifest, frames: Mapping[str, pd.DataFrame],
                      index: pd.Index) -> dict[str, pd.Series | pd.DataFrame]:
    """The outputs as the model returned them, from its stored tables (one pack's rows each);
    `index` is the sample index of the data the outputs describe."""
    outputs: dict[str, pd.Series | pd.DataFrame] = {}
    for table, specs in output_tables(manifest).items():
        frame = frames[table]
        kind = table_kind(specs)
        if kind == "series":
            indexed = frame.set_index(SAMPLE_KEY)
            for spec in specs:
                outputs[spec.name] = indexed[spec.name].reindex(index).rename(spec.name).rename_axis(index.name)
        elif kind == "columns":
            cells = list(pd.unique(frame[CELL_KEY]))  # stored order = the model's column order
            for spec in specs:
                wide = frame.pivot(index=SAMPLE_KEY, columns=CELL_KEY, values=spec.name)
                outputs[spec.name] = wide.reindex(index=index, columns=cells).rename_axis(index=index.name, columns=None)
        else:
            (spec,) = specs
            records = frame.sort_values(RECORD_KEY) if RECORD_KEY in frame else frame
            outputs[spec.name] = records.drop(columns=[PACK_KEY, RECORD_KEY], errors="ignore").reset_index(drop=True)
    return outputs


def inputs_fingerprint(inputs: pd.DataFrame, n_samples: int) -> str:
    """SHA-256 of the first `n_samples` rows of a model's resolved inputs (values and sample
    numbers): equal fingerprints mean the model would see the same data up to there."""
    import hashlib

    hashed = pd.util.hash_pandas_object(inputs.iloc[:n_samples], index=True).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, inputs.columns)).encode())
    return digest.hexdigest()


def append_tables(manifest: Manifest, stored: Mapping[str, pd.DataFrame], new: Mapping[str, pd.DataFrame],
                  resume_at: int) -> dict[str, pd.DataFrame]:
    """Stored rows before sample `resume_at` followed by a continued run's rows (a stateful
    model's incremental batch); records are renumbered to follow the stored ones."""
    combined = {}
    for table, specs in output_tables(manifest).items():
        before, after = stored[table], new[table]
        if table_kind(specs) == "records":
            after = after.assign(**{RECORD_KEY: after[RECORD_KEY] + len(before)})
        else:
            before = before[before[SAMPLE_KEY] < resume_at]
        combined[table] = pd.concat([before, after], ignore_index=True) if len(before) else after
    return combined

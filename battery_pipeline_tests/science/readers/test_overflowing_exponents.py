"""Exponents beyond a C int: pandas 2.3's float parser wraps them (1E4294967296 -> 1.0) or dies of
SIGSEGV (1e2147483648), in read_csv and to_numeric alike. Every text reader passes its bytes
through `base.tame_overflowing_exponents` first; these tests hold each one to it on a real file
whose numeric cells were replaced with such values.

The readers run in a child process: if one regresses, the test names it instead of the whole
pytest process dying.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from battery_pipeline.science.readers.base import tame_overflowing_exponents, text_to_float
from battery_pipeline_tests.science.readers import fuzzing

HUGE = ("3.E255631284671", "1e2147483648", "-2E4294967296", "1E4294967296")


def test_huge_exponents_are_rewritten_to_their_float64_meaning():
    raw = b"a,3.E255631284671,1e2147483648\n2,-1.5e-00012345,1E4294967296,1e308,1e+0005,x;3,5E99999; 7e12345 \n"
    assert tame_overflowing_exponents(raw) == b"a,3.e999,1e999\n2,-1.5e-999,1e999,1e308,1e+0005,x;3,5e999; 7e999 \n"
    values = text_to_float(["1E4294967296", "-1.5e-12345", "1e308", "2.5", "abc"]).tolist()
    assert np.isnan(values[0])  # overflow, not the 1.0 pandas' wrapped exponent gives
    assert values[1:4] == [0.0, 1e308, 2.5] and np.isnan(values[4])


def test_words_ending_in_digits_and_an_exponent_are_left_alone():
    raw = b"Cycle1E2000,step_2e1234,ok\n"
    assert tame_overflowing_exponents(raw) is raw or tame_overflowing_exponents(raw) == raw


def test_a_file_without_huge_exponents_is_returned_as_is():
    raw = b"time,voltage\n" + b"1.5e-05,3.7E+00\n" * 1000
    assert tame_overflowing_exponents(raw) is raw


def _poisoned_copies(seeds: dict[str, list[fuzzing.Seed]], folder) -> dict[str, str]:
    """Per text format: its first seed with every numeric cell of 3 body lines made huge."""
    out = {}
    for format_name, format_seeds in seeds.items():
        seed = format_seeds[0]
        if seed.kind != "text":
            continue
        target = folder / format_name / seed.path.parent.name
        target.mkdir(parents=True)
        for companion in seed.companions:
            (target / companion.name).write_bytes(companion.read_bytes())
        lines = seed.path.read_bytes().decode("latin-1").split("\n")
        header = max(range(min(len(lines), 40)), key=lambda i: lines[i].count(seed.delimiter))
        body = [i for i in range(header + 1, len(lines)) if lines[i].strip()]
        for k, i in enumerate(body[1:4]):
            cells = lines[i].split(seed.delimiter)
            for j, cell in enumerate(cells):
                try:
                    float(cell.strip().strip('"').replace(",", "."))
                except ValueError:
                    continue
                cells[j] = HUGE[(j + k) % len(HUGE)]
            lines[i] = seed.delimiter.join(cells)
        path = target / seed.path.name
        path.write_bytes("\n".join(lines).encode("latin-1"))
        out[format_name] = str(path)
    return out


def test_every_text_reader_survives_huge_exponents(datasets, tmp_path):
    try:
        seeds = fuzzing.build_seeds(datasets, tmp_path / "seeds")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    poisoned = _poisoned_copies(seeds, tmp_path / "poisoned")
    assert sorted(poisoned) == [
        "arbin_csv", "basytec_txt", "bdf_csv", "biologic_mpt", "canonical_csv", "digatron_csv",
        "maccor_mactest", "maccor_text", "neware_csv", "novonix_csv", "pec_csv", "xjtu_cycle_summary",
    ]
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from battery_pipeline_tests.science.readers import fuzzing
        for format_name, path in json.loads(sys.argv[1]).items():
            print(format_name, flush=True)  # the last name printed is the one that crashed
            problem = fuzzing.reading_problem(Path(path))
            print(json.dumps({"format": format_name, "problem": problem}), flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script, json.dumps(poisoned)], capture_output=True, text=True, timeout=600)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, f"reader process died (code {done.returncode}) while reading {lines[-1:]}: {done.stderr[-2000:]}"
    results = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["format"] for r in results] == list(poisoned)
    assert [r for r in results if r["problem"]] == []


def test_a_wrapped_exponent_does_not_become_a_plausible_current(datasets, tmp_path):
    # Arbin CSV goes through pandas' C float parser, where 1E4294967296 wraps to 1.0 A
    source = datasets / "cycler_samples" / "FastCharge_000025_CH8.csv"
    if not source.exists():
        pytest.skip(f"{source} not found")
    from battery_pipeline.science.readers.arbin_csv import ArbinCsvReader

    table = pd.read_csv(source, dtype=str)
    column = next(c for c in table.columns if c.startswith("Current"))
    table.loc[5, column] = "1E4294967296"
    path = tmp_path / source.name
    table.to_csv(path, index=False)
    samples = ArbinCsvReader.read([path], "cell").samples
    row = samples.loc[samples["source_row"] == 5, "current_a"]
    assert len(row) == 1 and not np.isfinite(row.iloc[0])

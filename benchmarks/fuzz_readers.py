"""Long fuzzing run of every cycler reader on mutated real files (the test suite tries 25 per format).

    python benchmarks/fuzz_readers.py [--inputs 2000] [--formats arbin_csv,nasa_pcoe_mat] [--first 0]
                                      [--workers 2] [--keep DIR]

Same seeds, mutations and property as `battery_pipeline_tests/science/readers/test_fuzz_readers.py`
(`fuzzing.mutate_case`, `fuzzing.reading_problem`): reading a mutated copy of a small real file
must give a canonical frame that validation sorts into valid and quarantined rows, or a
SourceFormatError naming the file. Input i of a format is mutated by `random.Random(i)`, so any
finding is reproduced by its number. Each format runs in worker processes, so that a crash of the
interpreter itself (a segfault in a compiled library) is counted as a failure of that input and
the run goes on with the next one.

Prints per format: inputs tried, how they ended (read / clear error / failure), the distinct
failures (exception and the project line it came from) with one example each, and seconds.
Needs the real datasets (../shared/datasets or $BATTERY_DATASETS). Exit status 1 if anything failed.

Bugs this fuzzer found, all fixed, each with a regression test (test_fuzz_readers.py or the reader's own tests):
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXED = (
    "nasa_pcoe_mat / panasonic_18650pf_mat: a MAT element with a type number that is no MAT "
    "data type (e.g. a zeroed tag) made scipy.io.loadmat segfault the process -> _matfile walks "
    "the element tree first and raises SourceFormatError",
    "nasa_pcoe_mat: text or a cell array in an impedance Re/Rct or a discharge Capacity field "
    "raised TypeError/ValueError -> SourceFormatError naming operation and field",
    "arbin_xlsx: a damaged deflate stream raised zlib.error while explaining why fastexcel failed "
    "-> SourceFormatError 'a member cannot be decompressed'",
    "arbin_xlsx: -inf in a Date_Time cell made fastexcel's Rust code panic (pyo3 PanicException, "
    "a BaseException) -> SourceFormatError naming the sheet",
    "digatron_csv: a lone quote in a data row (pandas ParserError 'EOF inside string') -> "
    "SourceFormatError 'data rows cannot be parsed as CSV'",
    "digatron_csv: a column named twice (ValueError 'Duplicate names are not allowed') -> later "
    "copies renamed, the file reads",
    "digatron_csv: a file cut inside its first data row (ParserError 'Too many columns "
    "specified') -> the row reads with its missing fields empty, as a cut last row does",
    "xjtu_cycle_summary: a lone quote in a row (pandas ParserError 'EOF inside string') -> "
    "read unquoted, reported as a non-numeric value with its row",
    "neware_nda (and then arbin_xlsx, nasa_pcoe_mat): fastnda's first .ndax read swaps the "
    "process's zlib inflate for isal's, whose errors are no zlib.error, so a damaged xlsx or MAT "
    "member raised IsalError -> fastnda imported with zlib put back (test_neware.py)",
    "bdf_csv: bytes that are not UTF-8 in a numeric cell reached the number conversion as Python "
    "bytes (UnicodeDecodeError) -> parsed from the decoded text, the cell NaN in its row (test_bdf.py)",
)
__doc__ += "".join(f"  - {line}\n" for line in FIXED)


def datasets_root() -> Path:
    return Path(os.environ.get("BATTERY_DATASETS", ROOT.parent / "shared" / "datasets"))


def worker(format_name: str, first: int, last: int, folder: Path) -> None:
    """Try inputs first..last-1; one JSON line per input on stdout (STARTED before each)."""
    from battery_pipeline_tests.science.readers import fuzzing

    seeds = fuzzing.build_seeds(datasets_root(), folder / "seeds")[format_name]
    for i in range(first, last):
        print(json.dumps({"started": i}), flush=True)
        case_folder = folder / "cases" / str(i)
        case = fuzzing.mutate_case(seeds, random.Random(i), case_folder)
        problem = fuzzing.reading_problem(case.path)
        if problem is None:
            try:  # a clear error or a read? (reading_problem accepts both)
                from battery_pipeline.science.readers import SourceFormatError, detect_format

                detect_format(case.path).read([case.path], fuzzing.FUZZ_CELL)
                outcome = "read"
            except SourceFormatError:
                outcome = "clear_error"
            shutil.rmtree(case_folder)
            print(json.dumps({"input": i, "outcome": outcome}), flush=True)
        else:
            project_lines = [l.strip() for l in problem.splitlines() if "battery_pipeline/" in l]
            signature = problem.strip().splitlines()[-1][:160] + (f" @ {project_lines[-1]}" if project_lines else "")
            print(json.dumps({"input": i, "outcome": "failure", "signature": signature,
                              "example": fuzzing.describe_case(case)}), flush=True)


def run_format(format_name: str, first: int, inputs: int, folder: Path) -> dict:
    """All inputs of one format, restarting the worker after a crash."""
    counts = collections.Counter()
    failures: dict[str, list] = {}
    started_at = time.perf_counter()
    position = first
    while position < first + inputs:
        process = subprocess.Popen(
            [sys.executable, __file__, "--worker", format_name, str(position), str(first + inputs), str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
            env={**os.environ, "RUST_BACKTRACE": "0"},
        )
        current = None
        for line in process.stdout:
            event = json.loads(line)
            if "started" in event:
                current = event["started"]
                continue
            counts[event["outcome"]] += 1
            if event["outcome"] == "failure":
                failures.setdefault(event["signature"], [0, event["example"]])[0] += 1
            position = event["input"] + 1
        process.wait()
        if process.returncode != 0 and current is not None and current >= position:
            signature = f"interpreter crashed (exit {process.returncode}, e.g. a segfault)"
            counts["failure"] += 1
            failures.setdefault(signature, [0, f"input {current} of {format_name}"])[0] += 1
            position = current + 1
        elif process.returncode != 0:
            raise SystemExit(f"worker for {format_name} failed before any input (exit {process.returncode})")
    return {"format": format_name, "counts": counts, "failures": failures, "seconds": time.perf_counter() - started_at}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))
        return 0
    from battery_pipeline_tests.science.readers.fuzzing import FORMATS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=2000, help="inputs per format")
    parser.add_argument("--first", type=int, default=0, help="number of the first input (its random seed)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--workers", type=int, default=2, help="formats fuzzed side by side")
    parser.add_argument("--keep", type=Path, help="keep the failing inputs under this folder")
    args = parser.parse_args()
    if not datasets_root().is_dir():
        print(f"real datasets not found at {datasets_root()} (set BATTERY_DATASETS)")
        return 2
    formats = [f for f in args.formats.split(",") if f]
    work = args.keep or Path(tempfile.mkdtemp(prefix="fuzz_readers_"))
    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(lambda f: run_format(f, args.first, args.inputs, work / f), formats))

    print(f"{'format':<24}{'inputs':>8}{'read':>8}{'clear error':>13}{'failures':>10}{'seconds':>9}")
    for r in results:
        c = r["counts"]
        print(f"{r['format']:<24}{sum(c.values()):>8}{c['read']:>8}{c['clear_error']:>13}{c['failure']:>10}{r['seconds']:>9.0f}")
    total = sum(sum(r["counts"].values()) for r in results)
    failed = sum(r["counts"]["failure"] for r in results)
    print(f"{'all':<24}{total:>8}{'':>8}{'':>13}{failed:>10}")
    for r in results:
        for signature, (count, example) in r["failures"].items():
            print(f"\nFAILURE {r['format']} x{count}: {signature}\n  e.g. {example}")
    print(f"\nFixed earlier (found by this fuzzer, regression tests in test_fuzz_readers.py or the reader's own tests): {len(FIXED)}")
    for line in FIXED:
        print(f"  - {line}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reads a retrain snapshot's data.parquet with pandas (pyarrow) and with polars, checks its
column types (as pyarrow, pandas and polars see them) and row count, and that its rows equal data.csv's (features compared as float32,
the precision devices report). Run by tests/tests/telemetry_drift.rs:

    python snapshot_parquet.py DATA_CSV DATA_PARQUET ROWS FEATURE...

Prints one JSON line: {"rows": N, "pandas": {column: dtype}, "polars": {column: dtype}}.
"""
import json
import sys

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq

TRAILING = ["predicted", "label", "device_id", "device_group", "request_id", "at_ms"]


def check(name: str, got, expected) -> None:
    if got != expected:
        sys.exit(f"{name}: {got!r} != {expected!r}")


def main() -> None:
    csv_path, parquet_path, rows = sys.argv[1:4]
    features = sys.argv[4:]
    columns = features + TRAILING

    schema = pq.read_schema(parquet_path)
    arrow_types = {f.name: str(f.type) for f in schema}
    check("parquet columns", schema.names, columns)
    check("parquet types", arrow_types, {**{f: "float" for f in features}, "predicted": "int64", "label": "int64",
                                         "device_id": "string", "device_group": "string", "request_id": "string",
                                         "at_ms": "timestamp[ms, tz=UTC]"})

    frame = pd.read_parquet(parquet_path, engine="pyarrow")
    check("pandas columns", list(frame.columns), columns)
    check("pandas rows", len(frame), int(rows))
    pandas_types = {c: str(t) for c, t in frame.dtypes.items()}
    for f in features:
        check(f"pandas dtype of {f}", pandas_types[f], "float32")
    check("pandas at_ms", pandas_types["at_ms"], "datetime64[ms, UTC]")

    polar = pl.read_parquet(parquet_path)
    check("polars columns", polar.columns, columns)
    check("polars rows", polar.height, int(rows))
    polars_types = {c: str(t) for c, t in polar.schema.items()}
    for f in features:
        check(f"polars dtype of {f}", polars_types[f], "Float32")
    for c in ["predicted", "label"]:
        check(f"polars dtype of {c}", polars_types[c], "Int64")
    for c in ["device_id", "device_group", "request_id"]:
        check(f"polars dtype of {c}", polars_types[c], "String")
    check("polars at_ms", polars_types["at_ms"], "Datetime(time_unit='ms', time_zone='UTC')")

    csv = pd.read_csv(csv_path, dtype={c: "string" for c in ["device_id", "device_group", "request_id"]})
    check("csv columns", list(csv.columns), columns)
    check("csv rows", len(csv), int(rows))
    for f in features:
        a, b = csv[f].to_numpy(dtype=np.float32, na_value=np.nan), frame[f].to_numpy(dtype=np.float32, na_value=np.nan)
        if not np.array_equal(a, b, equal_nan=True):
            sys.exit(f"feature {f} differs between CSV and Parquet")
        if not np.array_equal(b, polar[f].to_numpy().astype(np.float32), equal_nan=True):
            sys.exit(f"feature {f} differs between pandas and polars")
    for c in ["predicted", "label"]:
        check(c, csv[c].astype("Int64").tolist(), frame[c].astype("Int64").tolist())
        check(f"polars {c}", [None if v is None else int(v) for v in polar[c].to_list()],
              [None if pd.isna(v) else int(v) for v in frame[c].tolist()])
    for c in ["device_id", "device_group", "request_id"]:
        check(c, csv[c].fillna("").tolist(), frame[c].fillna("").tolist())
        check(f"polars {c}", [v or "" for v in polar[c].to_list()], frame[c].fillna("").tolist())
    millis = frame["at_ms"].astype("int64").tolist()
    check("at_ms", csv["at_ms"].astype("int64").tolist(), millis)
    check("polars at_ms", polar["at_ms"].dt.epoch("ms").to_list(), millis)
    print(json.dumps({"rows": len(frame), "pandas": pandas_types, "polars": polars_types}))


if __name__ == "__main__":
    main()

"""Logs an MLflow run that trains a scikit-learn iris classifier, converts it to ONNX (skl2onnx,
with the options tract runs: no ZipMap, a named batch dimension), logs its training data as the
run's dataset input and as `baseline.csv`, registers the model and points ALIAS at the new
version. Run by tests/tests/mlflow_import.rs against a real `mlflow server`:

    python mlflow_register.py TRACKING_URI MODEL_NAME ALIAS C COMMIT

Prints one JSON line: run_id, version, the dataset's MLflow digest, params and metrics.
"""
import json
import os
import sys
import tempfile

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import mlflow  # noqa: E402 (after the thread settings)
import mlflow.onnx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main() -> None:
    uri, name, alias, c, commit = sys.argv[1:6]
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("edgefleet-e2e")
    iris = load_iris()
    x = iris.data.astype(np.float32)
    frame = pd.DataFrame(x, columns=FEATURES).assign(target=iris.target)
    with mlflow.start_run() as run:
        params = {"C": float(c), "max_iter": 500, "solver": "lbfgs"}
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=params["C"], max_iter=500, random_state=0))
        clf.fit(x, iris.target)
        accuracy = float(clf.score(x, iris.target))
        mlflow.log_params(params)
        mlflow.log_metrics({"accuracy": accuracy, "train_rows": float(len(x))})
        mlflow.set_tag("mlflow.source.git.commit", commit)
        dataset = mlflow.data.from_pandas(frame, name="iris", targets="target")
        mlflow.log_input(dataset, context="training")
        with tempfile.TemporaryDirectory() as tmp:
            baseline = os.path.join(tmp, "baseline.csv")
            frame[FEATURES].to_csv(baseline, index=False)
            mlflow.log_artifact(baseline)
        onx = to_onnx(
            clf,
            x[:1],
            target_opset={"": 17, "ai.onnx.ml": 3},
            options={StandardScaler: {"div": "div"}, LogisticRegression: {"zipmap": False}},
        )
        for value in list(onx.graph.input) + list(onx.graph.output):
            dims = value.type.tensor_type.shape.dim
            if dims and not dims[0].dim_param and not dims[0].HasField("dim_value"):
                dims[0].dim_param = "N"
        info = mlflow.onnx.log_model(onx, name="model", registered_model_name=name)
    client = MlflowClient()
    version = info.registered_model_version
    client.set_registered_model_alias(name, alias, version)
    print(json.dumps({
        "run_id": run.info.run_id,
        "version": int(version),
        "dataset_digest": dataset.digest,
        "params": {k: str(v) for k, v in params.items()},
        "accuracy": accuracy,
    }))


if __name__ == "__main__":
    main()

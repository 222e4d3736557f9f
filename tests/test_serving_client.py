"""`pump_keras.serving_client` against a local stand-in for TF Serving's REST API.

The stand-in is NOT TF Serving: it is an `http.server` in a thread that
reads the request the way TF Serving's row format does (`signature_name`,
`instances` as objects keyed by the input name, binary strings as
`{"b64": ...}`), runs the exported SavedModel's signature on the decoded
bytes and answers `{"predictions": [...]}` or `{"error": ...}` with HTTP
400, as TF Serving does. It checks the client's encoding and decoding, not
TF Serving itself.
"""

import base64
import http.server
import json
import socket
import threading

import numpy as np
import pytest
import tensorflow as tf

from pump_keras import serving_client
from pump_keras.serving_client import ServingError, score_files
from tests.conftest import real_wav_files
from tests.test_predict import tiny_model_files

MODEL_NAME = "pump_anomaly"


class StandInServing(http.server.HTTPServer):
    """Serves one SavedModel at /v1/models/pump_anomaly:predict and records each batch size."""

    def __init__(self, saved_model_path):
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.model = tf.saved_model.load(saved_model_path)
        self.batch_sizes = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_port}/v1/models/{MODEL_NAME}:predict"


class StandInHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output quiet
        pass

    def _answer(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != f"/v1/models/{MODEL_NAME}:predict":
            return self._answer(404, {"error": f"Servable not found for request: {self.path}"})
        name = request.get("signature_name", "serving_default")
        signatures = self.server.model.signatures
        if name not in signatures:
            return self._answer(400, {"error": f'Serving signature name: "{name}" not found in signature def'})
        signature = signatures[name]
        (input_name,) = signature.structured_input_signature[1]
        try:
            # Row format: one object per instance, keyed by input name; binary as {"b64": ...}.
            wav_bytes = [base64.b64decode(instance[input_name]["b64"], validate=True)
                         for instance in request["instances"]]
        except (KeyError, TypeError, ValueError) as error:
            return self._answer(400, {"error": f"Failed to process element: {error!r}"})
        self.server.batch_sizes.append(len(wav_bytes))
        try:
            outputs = signature(**{input_name: tf.constant(wav_bytes, tf.string)})
        except tf.errors.InvalidArgumentError as error:
            return self._answer(400, {"error": error.message})
        columns = {key: value.numpy().tolist() for key, value in outputs.items()}
        predictions = [{key: values[i] for key, values in columns.items()} for i in range(len(wav_bytes))]
        return self._answer(200, {"predictions": predictions})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    stand_in = StandInServing(tiny_model_files(tmp_path_factory).saved_model)
    thread = threading.Thread(target=stand_in.serve_forever, daemon=True)
    thread.start()
    yield stand_in
    stand_in.shutdown()
    stand_in.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("serving") / "bad.wav"
    path.write_bytes(b"this is not a wav file at all" * 10)
    return str(path)


def test_scores_equal_the_saved_models_own(server):
    paths = [str(path) for path in real_wav_files()]
    results = score_files(server.url, paths, batch_size=10)
    assert server.batch_sizes[-3:] == [10, 10, len(paths) - 20]
    # The same batches straight through the SavedModel: JSON carries float32 exactly.
    signature = server.model.signatures["serving_default"]
    direct = {"anomaly_score": [], "is_anomaly": [], "logit": []}
    for start in range(0, len(paths), 10):
        outputs = signature(wav_bytes=tf.constant([open(p, "rb").read() for p in paths[start:start + 10]]))
        for key, values in direct.items():
            values.extend(outputs[key].numpy().tolist())
    assert [r["path"] for r in results] == paths
    for key, values in direct.items():
        assert [r[key] for r in results] == values, key
    assert np.ptp(direct["anomaly_score"]) > 0.05


def test_the_cli_prints_one_row_per_file(server, capsys):
    paths = [str(path) for path in real_wav_files()[:3]]
    assert serving_client.main([*paths, "--url", server.url, "--batch-size", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["path", "anomaly_score", "is_anomaly"]
    assert [line.split()[0] for line in lines[1:]] == paths
    assert all(line.split()[2] in ("True", "False") for line in lines[1:])


def test_a_server_error_is_reported_with_its_text(server, bad_file, capsys):
    good = str(real_wav_files()[0])
    with pytest.raises(ServingError) as raised:
        score_files(server.url, [good, bad_file])
    message = str(raised.value)
    assert "HTTP 400" in message and "RIFF/WAVE" in message and bad_file in message
    with pytest.raises(ServingError, match='HTTP 400.*"nope" not found in signature def'):
        score_files(server.url, [good], signature="nope")
    assert serving_client.main([good, bad_file, "--url", server.url]) == 1
    assert "RIFF/WAVE" in capsys.readouterr().err


def test_connection_refused_is_a_clear_error(capsys, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"
    clip = str(real_wav_files()[0])
    with pytest.raises(ServingError, match=r"cannot reach .*:\d+.*[Cc]onnection refused"):
        score_files(url, [clip])
    assert serving_client.main([clip, "--url", url]) == 1
    assert "Connection refused" in capsys.readouterr().err
    assert serving_client.main([str(tmp_path), "--url", url]) == 2  # no files: usage error


def test_request_body_is_tf_servings_row_format():
    body = json.loads(serving_client.request_body([b"RIFF\x00\xff", b""], signature="serving_default"))
    assert body == {"signature_name": "serving_default",
                    "instances": [{"wav_bytes": {"b64": "UklGRgD/"}}, {"wav_bytes": {"b64": ""}}]}

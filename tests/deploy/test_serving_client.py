"""`pump_keras.deploy.serving_client` against a local stand-in for TF Serving's REST API.

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
import os
import socket
import threading

import numpy as np
import pytest
import tensorflow as tf

from pump_keras.cli import serving_client as serving_client_cli
from pump_keras.deploy import serving_client
from pump_keras.deploy.serving_client import ServingError, score_files
from tests.conftest import real_wav_files
from tests.deploy.test_predict import tiny_model_files

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
    assert serving_client_cli.main([*paths, "--url", server.url, "--batch-size", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["path", "anomaly_score", "is_anomaly", "error"]
    assert [line.split()[0] for line in lines[1:-1]] == paths
    assert all(line.split()[2] in ("True", "False") for line in lines[1:-1])
    assert lines[-1].startswith("3 files: ") and "0 failed" in lines[-1]


def test_a_bad_file_is_named_and_the_good_files_of_its_batch_are_still_scored(server, bad_file, capsys):
    good = [str(path) for path in real_wav_files()[:2]]
    results = score_files(server.url, [good[0], bad_file, good[1]], batch_size=3)
    assert server.batch_sizes[-4:] == [3, 1, 1, 1]  # the refused batch, then file by file
    assert [r["path"] for r in results] == [good[0], bad_file, good[1]]
    assert results[0]["error"] is None and results[2]["error"] is None
    assert 0.0 <= results[0]["anomaly_score"] <= 1.0 and isinstance(results[2]["is_anomaly"], bool)
    assert results[1]["anomaly_score"] is None and "RIFF/WAVE" in results[1]["error"]
    assert serving_client_cli.main([good[0], bad_file, "--url", server.url]) == 1
    out = capsys.readouterr().out
    assert "RIFF/WAVE" in next(line for line in out.splitlines() if line.startswith(bad_file))
    assert float(next(line for line in out.splitlines() if line.startswith(good[0])).split()[1]) >= 0.0
    assert "2 files: " in out and "1 failed" in out
    refused = score_files(server.url, [good[0]], signature="nope")
    assert '"nope" not found in signature def' in refused[0]["error"]


def test_connection_refused_is_a_clear_error(capsys, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict"
    clip = str(real_wav_files()[0])
    with pytest.raises(ServingError, match=r"cannot reach .*:\d+.*[Cc]onnection refused"):
        score_files(url, [clip])
    assert serving_client_cli.main([clip, "--url", url]) == 1
    assert "Connection refused" in capsys.readouterr().err
    assert serving_client_cli.main([str(tmp_path), "--url", url]) == 2  # no files: usage error


def test_request_body_is_tf_servings_row_format():
    body = json.loads(serving_client.request_body([b"RIFF\x00\xff", b""], signature="serving_default"))
    assert body == {"signature_name": "serving_default",
                    "instances": [{"wav_bytes": {"b64": "UklGRgD/"}}, {"wav_bytes": {"b64": ""}}]}


class CannedServing(http.server.HTTPServer):
    """Answers every request with `self.predictions` (a JSON text), whatever was sent."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), CannedHandler)
        self.predictions = "[]"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_port}/v1/models/{MODEL_NAME}:predict"


class CannedHandler(StandInHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = ('{"predictions": ' + self.server.predictions + "}").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_every_field_of_an_answer_is_checked(tmp_path):
    canned = CannedServing()
    thread = threading.Thread(target=canned.serve_forever, daemon=True)
    thread.start()
    try:
        answers = {
            "valid": '{"anomaly_score": 0.25, "is_anomaly": false, "logit": -1.0986123}',
            "string_flag": '{"anomaly_score": 0.25, "is_anomaly": "false", "logit": -1.0986123}',
            "out_of_range": '{"anomaly_score": 7.5, "is_anomaly": true, "logit": 2.0}',
            "nan": '{"anomaly_score": NaN, "is_anomaly": false, "logit": NaN}',
            "string_score": '{"anomaly_score": "0.25", "is_anomaly": false, "logit": -1.0986123}',
            "mismatch": '{"anomaly_score": 0.9, "is_anomaly": true, "logit": -1.0986123}',
            "missing": '{"anomaly_score": 0.25}',
            "bare": '0.25',
        }
        canned.predictions = "[" + ", ".join(answers.values()) + "]"
        paths = []
        for name in answers:
            paths.append(str(tmp_path / f"{name}.wav"))
            open(paths[-1], "wb").write(b"RIFF")
        results = {r["path"][len(str(tmp_path)) + 1:-4]: r for r in
                   score_files(canned.url, paths, batch_size=len(paths))}
        assert results["valid"] == {"path": paths[0], "anomaly_score": 0.25, "is_anomaly": False,
                                    "logit": -1.0986123, "error": None}
        reasons = {"string_flag": "is_anomaly is 'false'", "out_of_range": "outside [0, 1]",
                   "nan": "not a finite number", "string_score": "not a number",
                   "mismatch": "not the sigmoid", "missing": "lacks is_anomaly, logit", "bare": "expected an object"}
        for name, reason in reasons.items():
            assert results[name]["anomaly_score"] is None and results[name]["is_anomaly"] is None, name
            assert "not a valid score" in results[name]["error"] and reason in results[name]["error"], name
    finally:
        canned.shutdown()
        canned.server_close()
        thread.join(timeout=10)


def test_model_info_makes_the_client_warn_like_predict(server, tmp_path, capsys):
    from pump_keras.audio.wavfile import write_wav

    short = tmp_path / "short.wav"
    write_wav(str(short), np.zeros((16000, 1), np.int16), 16000)
    saved_model = tiny_model_files(None).saved_model
    good = str(real_wav_files()[0])
    assert serving_client_cli.main([good, str(short), "--url", server.url, "--model-info", saved_model]) == 0
    err = capsys.readouterr().err
    assert "trained on SYNTHETIC pump recordings" in err
    warnings = [line for line in err.splitlines() if "s long, but the model was trained on" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {short} is 1 s")
    assert serving_client_cli.main([good, "--url", server.url, "--model-info", str(tmp_path)]) == 2
    assert "not a pump_keras export" in capsys.readouterr().err


def test_a_named_pipe_among_the_files_is_a_failed_row_and_never_opened(tmp_path):
    from pump_keras.deploy.serving_client import read_files
    from tests.conftest import fails_instead_of_hanging

    (tmp_path / "clip.wav").write_bytes(b"RIFF")
    os.mkfifo(tmp_path / "pipe.wav")
    paths = [str(tmp_path / "clip.wav"), str(tmp_path / "pipe.wav"), str(tmp_path / "gone.wav")]
    with fails_instead_of_hanging(10):
        outcomes, readable = read_files(paths)
    assert readable == [(0, b"RIFF")]
    assert outcomes[0] is None and "named pipe (FIFO)" in outcomes[1] and "cannot read" in outcomes[2]

"""``draem-zoo serve`` from the command line: flags to a running application (autoscaling on), its URL printed,
and one-line errors for a bad --model."""

from __future__ import annotations

import json

import pytest
import requests

from draem_zoo import cli

from .test_service import free_port, wait_healthy


def test_serve_command_starts_the_application_with_autoscaling(ray_local, model_dir, monkeypatch, capsys):
    from ray import serve

    import draem_zoo.serve.service as service

    monkeypatch.setattr(service, "serve_forever", lambda: None)  # return once it is up, instead of blocking
    port = free_port()
    try:
        assert cli.main(["serve", "--model", f"bottle={model_dir}", "--port", str(port), "--device", "cpu",
                         "--max-replicas", "2", "--min-replicas", "1", "--max-batch-size", "4"]) == 0
        out, err = capsys.readouterr()
        started = json.loads(out.strip().splitlines()[-1])
        assert started["url"] == f"http://127.0.0.1:{port}" and started["models"] == ["bottle"]
        assert "Ctrl-C" in err
        wait_healthy(started["url"])
        assert [m["name"] for m in requests.get(f"{started['url']}/models", timeout=10).json()] == ["bottle"]
        deployment = serve.status().applications["draem-zoo"].deployments["draem"]
        assert deployment.status in ("HEALTHY", "UPSCALING", "DOWNSCALING")
    finally:
        serve.shutdown()


@pytest.mark.parametrize("models,says", [
    (["nope/missing"], "hf-hub:nope/missing"),
    (["{dir}", "{dir}"], "already taken"),
])
def test_bad_models_are_one_line(model_dir, capsys, models, says):
    argv = ["serve", "--port", "1"]
    for m in models:
        argv += ["--model", m.format(dir=model_dir)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err

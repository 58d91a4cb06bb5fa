"""``draem-zoo serve``: the Ray Serve application on 127.0.0.1 (one start for the module): /predict, /models,
/healthz, the 4xx answers for bad input, and the page in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from .conftest import png_header, reference_scores, threshold, write_images

# CI installs Chromium: there the browser test must run, not skip
REQUIRE_BROWSER = os.environ.get("DRAEM_ZOO_REQUIRE_BROWSER") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the service at {url} did not come up in {seconds:.0f} s")


@pytest.fixture(scope="module")
def service(ray_local, model_dir, tmp_path_factory):
    from ray import serve

    from draem_zoo.serve.models import name_models
    from draem_zoo.serve.service import build_app, start

    # two names for one model folder: the service holds several categories at once
    models = name_models([str(model_dir), f"second={model_dir}"])
    app = build_app(models, device="cpu", cpus_per_replica=0, max_upload_bytes=256 << 10, max_batch_size=4)
    url = start(app, port=free_port())
    wait_healthy(url)
    yield url
    serve.shutdown()


def test_models_and_health(service, model_dir):
    assert requests.get(f"{service}/healthz", timeout=10).json() == {"status": "ok", "models": 2}
    models = requests.get(f"{service}/models", timeout=10).json()
    assert [m["name"] for m in models] == ["weave", "second"]  # the first named after its category
    m = models[0]
    config = __import__("json").loads((model_dir / "config.json").read_text())
    assert m["weights_sha256"] == config["weights_sha256"] and m["category"] == "weave"
    assert m["metrics"] == {"image_auroc": 0.975, "pixel_auroc": 0.962, "pixel_ap": 0.581, "aupro": 0.9}
    assert m["threshold"] == threshold(model_dir) and m["filter_size"] == 5 and m["image_size"] == 32


def test_predict_raw_and_multipart_match_model_predict(service, model_dir, tmp_path):
    paths = write_images(tmp_path / "x", 3)
    ref, thr = reference_scores(model_dir, paths), threshold(model_dir)
    for i, p in enumerate(paths):
        if i == 0:  # raw body, the only model named
            r = requests.post(f"{service}/predict?model=weave", data=p.read_bytes(), timeout=30)
        else:  # a form file, as curl -F sends it
            r = requests.post(f"{service}/predict?model=second&pictures={int(i == 2)}",
                              files={"file": (p.name, p.read_bytes(), "image/png")}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert abs(body["score"] - ref[str(p)]) < 1e-5
        assert body["anomalous"] == (body["score"] >= thr) and body["threshold"] == thr and body["filter_size"] == 5
        assert body["image"] == ("upload" if i == 0 else p.name)
        if i == 2:
            for key in ("input", "anomaly_map", "overlay"):
                im = Image.open(io.BytesIO(base64.b64decode(body["pictures"][key])))
                assert im.format == "PNG" and im.size == (32, 32)
        else:
            assert "pictures" not in body


def test_concurrent_requests_each_get_their_own_answer(service, model_dir, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    paths = write_images(tmp_path / "y", 8, seed=3)
    ref = reference_scores(model_dir, paths)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: requests.post(f"{service}/predict?model=weave", data=p.read_bytes(),
                                                        timeout=60).json(), paths))
    for p, a in zip(paths, answers):
        assert abs(a["score"] - ref[str(p)]) < 1e-5


@pytest.mark.parametrize("case,status,says", [
    ("not an image", 400, "cannot decode"),
    ("above the pixel limit", 413, "pixels, above the limit"),
    ("above the upload limit", 413, "above the limit of 262,144 bytes"),
    ("unknown model", 404, "no model 'nope'"),
    ("no model named", 400, "name one with ?model="),
    ("bad filter size", 400, "odd integer"),
    ("empty body", 400, "no image"),
])
def test_bad_input_is_a_4xx_with_one_line(service, tmp_path, case, status, says):
    good = write_images(tmp_path / "z", 1)[0].read_bytes()
    url, data = f"{service}/predict?model=weave", good
    if case == "not an image":
        data = b"GIF89a but not really"
    elif case == "above the pixel limit":
        data = png_header(20000, 20000)  # 400 million pixels, as train's limit refuses
    elif case == "above the upload limit":
        data = os.urandom(300 << 10)
    elif case == "unknown model":
        url = f"{service}/predict?model=nope"
    elif case == "no model named":
        url = f"{service}/predict"
    elif case == "bad filter size":
        url += "&filter_size=4"
    elif case == "empty body":
        data = b""
    r = requests.post(url, data=data, timeout=30)
    assert r.status_code == status, (r.status_code, r.text)
    error = r.json()["error"]
    assert says in error and "\n" not in error and "Traceback" not in error


def _chromium():
    chrome, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chrome and driver):
        if REQUIRE_BROWSER:
            pytest.fail("DRAEM_ZOO_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed (apt-get install "
                        "chromium chromium-driver)")
        pytest.skip("no chromium + chromedriver here (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900"):
        opts.add_argument(flag)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))


def test_page_in_headless_chromium_shows_score_and_three_pictures(service, model_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    image = write_images(tmp_path / "page", 1, seed=7, size=64)[0]
    ref = reference_scores(model_dir, [image])[str(image)]
    browser = _chromium()
    try:
        browser.get(f"{service}/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 2)
        Select(browser.find_element(By.ID, "model")).select_by_value("second")
        assert "threshold" in browser.find_element(By.ID, "model-info").text
        browser.find_element(By.ID, "file").send_keys(str(Path(image).resolve()))
        wait.until(ec.visibility_of_element_located((By.ID, "result")))
        score = float(browser.find_element(By.ID, "score").text)
        assert abs(score - ref) < 1e-4  # shown with 4 decimals
        decision = browser.find_element(By.ID, "decision").text
        assert decision == ("ANOMALOUS" if ref >= threshold(model_dir) else "normal")
        for pic in ("img-input", "img-map", "img-overlay"):
            el = browser.find_element(By.ID, pic)
            assert el.is_displayed()
            assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", el) == 32
        assert browser.find_element(By.ID, "error").text == ""
        if os.environ.get("DRAEM_ZOO_SCREENSHOT"):  # to look at the page: DRAEM_ZOO_SCREENSHOT=page.png
            browser.save_screenshot(os.environ["DRAEM_ZOO_SCREENSHOT"])
    finally:
        browser.quit()

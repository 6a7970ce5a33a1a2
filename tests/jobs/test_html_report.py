"""dfq.jobs.html_report on a real tiny run: every section with its data or a line saying how to get it,
escaped names, nothing loaded from outside the file; and a headless Chromium that renders it without a
console error (the detection itself checked on a page that does log one)."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import dfq
from dfq.errors import DfqError
from dfq.jobs import CalibrateRequest, CalibrationSource, run_calibrate
from dfq.jobs.html_report import (
    HOW_TO,
    TOP_SENSITIVITY,
    activation_ranges,
    render_html_report,
    write_html_report,
)
from dfq.quant.reconstruct import ReconstructConfig

EVIL = 'blocks.0.<b>"evil"</b>&co'  # a name that must come out escaped


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Iterator[tuple[Path, Path]]:
    """``(plain, full)``: a noise-calibrated test_vit run with two reconstruction steps as written by the
    job, and a copy with analysis.json, an estimate and a mixed-precision entry when the job wrote none,
    and one activation range made non-finite."""
    root = tmp_path_factory.mktemp("html")
    request = CalibrateRequest(out=str(root / "run"), config=dfq.presets["w4a8"], model="test_vit", pretrained=False,
                               source=CalibrationSource.inversion("noise"), num_images=2, device="cpu", progress=False,
                               reconstruct=ReconstructConfig(iters=2, batch_size=2))  # fmt: skip
    run_calibrate(request)
    plain, full = root / "run", root / "full"
    shutil.copytree(plain, full)
    report = json.loads((full / "report.json").read_text())
    state = torch.load(full / "quant_state.pt", map_location="cpu", weights_only=True)
    sd = state["state_dict"]
    weights = [k[: -len(".weight_quantizer.lo")] for k in sd if k.endswith(".weight_quantizer.lo")]
    acts = [site for site, _, _ in activation_ranges(sd)]
    rows = [{"name": n, "kind": "weight", "bits": 4, "numel": int(sd[n + ".layer.weight"].numel()),
             "alone_kl": 1e-3 * (i + 1), "drop_kl": 0.5 - 1e-3 * (i + 1)} for i, n in enumerate(weights)]  # fmt: skip
    rows += [{"name": n, "kind": "act", "bits": 8, "numel": 0, "alone_kl": 1e-4 * (i + 1), "drop_kl": 0.5}
             for i, n in enumerate(acts)]  # fmt: skip
    rows.append({"name": EVIL, "kind": "weight", "bits": 4, "numel": 7, "alone_kl": 9.0, "drop_kl": 0.25})
    images = {"source": "noise <held out>", "count": 8}
    (full / "analysis.json").write_text(json.dumps({"images": images, "baseline_kl": 0.5, "rows": rows}))
    report.setdefault("estimate", {"source": "noise", "images": 8, "agreement": 0.875, "kl": 0.0123})
    report.setdefault("mixed_precision", {"budget": 5.0, "average_bits": 4.9,
                                          "eight_bit": [weights[-1]], "layers": {w: 4 for w in weights[:-1]} | {weights[-1]: 8}})  # fmt: skip
    (full / "report.json").write_text(json.dumps(report))
    sd["head.input_quantizer.lo"] = torch.tensor(float("nan"))
    sd["head.input_quantizer.hi"] = torch.tensor(float("nan"))
    torch.save(state, full / "quant_state.pt")
    yield plain, full


def _section(html: str, sid: str) -> str:
    m = re.search(f'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_full_report_has_every_section_escaped_and_self_contained(runs: tuple[Path, Path]) -> None:
    _, full = runs
    out = write_html_report(full)
    assert out == full / "report.html" and not [p for p in full.iterdir() if p.name.endswith(".tmp")]
    html = out.read_text()
    report = json.loads((full / "report.json").read_text())
    # self-contained: no URL, no external script/style/font, every image inline
    assert "http://" not in html and "https://" not in html
    assert all(v.startswith("data:") for v in re.findall(r'src="([^"]*)"', html))
    assert all(v.startswith("#") for v in re.findall(r'href="([^"]*)"', html))
    assert "<script src" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    imgs = re.findall(r"<img[^>]*>", html)
    assert len(imgs) == 1 and all('src="data:image/png;base64,' in i for i in imgs)
    data = re.search(r'src="data:image/png;base64,([^"]+)"', imgs[0]).group(1)
    assert base64.b64decode(data) == (full / "calibration" / "preview.png").read_bytes()
    # 1. summary
    summary = _section(html, "summary")
    for text in ("test_vit", "w4a8", "trt", "noise", "load_model", "quantize_and_calibrate", "reconstruct"):
        assert text in summary, text
    assert f"<td>num_images</td><td class=\"n\">{report['calibration']['num_images']}</td>" in summary
    assert f"<code>{HOW_TO['eval']}</code>" in summary  # no real-image figures: says how to get them
    # 3. estimate, with its caveat
    est = _section(html, "estimate")
    assert "synthetic" in est and "not on real data" in est and "rank" in est and "Not an accuracy" in est
    assert f"{100 * report['estimate']['agreement']:.2f}%" in est
    # 4. sensitivity: escaped, sorted, top rows drawn, the rest counted
    sens = _section(html, "sensitivity")
    rows = json.loads((full / "analysis.json").read_text())["rows"]
    assert EVIL not in html and "blocks.0.&lt;b&gt;&quot;evil&quot;&lt;/b&gt;&amp;co" in sens
    assert sens.index("&lt;b&gt;&quot;evil") < sens.index(max((r for r in rows if r["name"] != EVIL),
                                                             key=lambda r: r["alone_kl"])["name"])  # fmt: skip
    assert f"{len(rows) - TOP_SENSITIVITY} more rows" in sens
    assert sens.count("<rect") == 2 * TOP_SENSITIVITY  # alone_kl and saving bars of the top rows
    assert "noise &lt;held out&gt;" in sens and "0.25" in sens  # saving of the evil row: 0.5 - 0.25
    # 5. activation ranges: every scalar non-weight quantizer, the NaN one uncalibrated
    ranges = _section(html, "ranges")
    sd = torch.load(full / "quant_state.pt", map_location="cpu", weights_only=True)["state_dict"]
    scalar = [k for k in sd if k.endswith(".lo") and sd[k].ndim == 0 and ".weight_quantizer." not in k]
    assert len(activation_ranges(sd)) == len(scalar) > 30
    assert f"{len(scalar)} activation quantizers, 1 uncalibrated" in ranges and "uncalibrated</text>" in ranges
    assert "blocks.5.mlp.fc2.input" in ranges and "blocks.0.attn.matmul_qk.k" in ranges
    assert "weight_quantizer" not in ranges and "blocks.*.attn.matmul_av.softmax" in ranges
    # 6. mixed precision and 7. reconstruction
    mixed = _section(html, "mixed-precision")
    for layer in report["mixed_precision"]["eight_bit"]:
        assert f"<li><code>{layer}</code></li>" in mixed
    recon = _section(html, "reconstruction")
    units = report["reconstruct"]["units"]
    assert len(units) == 8 and all(f"<td>{u['name']}</td>" in recon for u in units)
    assert recon.count("<rect") == 2 * len(units) and "error after" in recon


def test_missing_pieces_say_what_writes_them(runs: tuple[Path, Path], tmp_path: Path) -> None:
    plain, _ = runs
    bare = tmp_path / "bare"
    shutil.copytree(plain, bare)
    (bare / "calibration" / "preview.png").unlink()
    (bare / "quant_state.pt").unlink()
    report = json.loads((bare / "report.json").read_text())
    for key in ("estimate", "mixed_precision", "reconstruct"):
        report.pop(key, None)
    (bare / "report.json").write_text(json.dumps(report))
    out = write_html_report(bare, tmp_path / "elsewhere.html")
    html = out.read_text()
    assert not (bare / "report.html").exists() and "<img" not in html
    for sid, key, what in [("sensitivity", "analysis", "No analysis.json"), ("preview", "preview", "No calibration/preview.png"),
                           ("estimate", "estimate", "No data-free accuracy estimate"), ("ranges", "ranges", "No quant_state.pt"),
                           ("mixed-precision", "mixed_precision", "No mixed-precision"),
                           ("reconstruction", "reconstruct", "No block reconstruction")]:  # fmt: skip
        section = _section(html, sid)
        assert what in section and f"<code>{HOW_TO[key]}</code>" in section, sid
    assert "--weight-bits-budget" in _section(html, "sensitivity")
    with pytest.raises(DfqError, match="report.json"):
        render_html_report(tmp_path)


# -- a real browser -------------------------------------------------------------------------------


def _browser() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


class _DevTools:
    """Headless Chromium driven over the DevTools protocol on ``--remote-debugging-pipe`` (the browser
    reads commands on fd 3 and writes replies and events on fd 4, each a JSON text ended by NUL)."""

    def __init__(self, exe: str, profile: Path) -> None:
        to_r, self._to = os.pipe()
        self._from, from_w = os.pipe()
        # fd 3/4 are set by the shell from stdin/stdout, which subprocess places robustly
        self.proc = subprocess.Popen(["sh", "-c", 'exec "$@" 3<&0 4>&1 </dev/null >/dev/null', "sh", exe,
                                      "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                                      f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                                      "--disable-extensions", "about:blank"],
                                     stdin=to_r, stdout=from_w, stderr=subprocess.DEVNULL)  # fmt: skip
        os.close(to_r)
        os.close(from_w)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}} | ({"sessionId": session} if session else {})
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to)
        os.close(self._from)


def _render(url: str, profile: Path, size: tuple[int, int] = (1280, 2000)) -> tuple[list[str], list[str], bytes]:
    """Load ``url`` headless: ``(errors, requested URLs, PNG screenshot)``. Errors are console.error/assert
    calls, uncaught exceptions and browser log entries of level error (failed loads, CSP refusals)."""
    browser = _DevTools(_browser() or "chromium", profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": size[0], "height": size[1],
                     "deviceScaleFactor": 1, "mobile": False}, session)  # fmt: skip
        browser.send("Page.navigate", {"url": url}, session)
        browser.wait_for("Page.loadEventFired")
        png = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, session)["data"])
        browser.send("Runtime.evaluate", {"expression": "1"}, session)  # flush events queued before the reply
    finally:
        browser.close()
    errors, requests = [], []
    for e in browser.events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append("log: " + p["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            requests.append(p["request"]["url"])
    return errors, requests, png


needs_browser = pytest.mark.skipif(_browser() is None, reason="no chromium, chromium-browser or google-chrome on PATH")


@needs_browser
def test_browser_error_detection_catches_console_errors_exceptions_and_failed_loads(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><p>bad</p><img src="missing.png">'
                    '<script>console.error("x-console-error")</script>'
                    '<script>throw new Error("y-uncaught")</script></body></html>')  # fmt: skip
    errors, requests, png = _render(page.as_uri(), tmp_path / "profile", (320, 240))
    assert any("x-console-error" in e for e in errors), errors
    assert any("y-uncaught" in e and e.startswith("exception") for e in errors), errors
    assert any(e.startswith("log:") for e in errors), errors  # the missing image
    assert (tmp_path / "missing.png").as_uri() in requests and png.startswith(b"\x89PNG")


@needs_browser
def test_report_renders_in_headless_chromium_without_errors(runs: tuple[Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    _, full = runs
    out = write_html_report(full, tmp_path / "report.html")
    errors, requests, png = _render(out.as_uri(), tmp_path / "profile")
    assert errors == []
    assert all(u == out.as_uri() or u.startswith("data:") for u in requests), requests
    (tmp_path / "shot.png").write_bytes(png)
    img = Image.open(tmp_path / "shot.png").convert("RGB")
    assert img.size == (1280, 2000)
    colours = img.getcolors(img.width * img.height)  # [(count, (r, g, b))]
    non_white = sum(n for n, rgb in colours if sum(rgb) < 740) / (img.width * img.height)
    assert len(colours) > 50 and non_white > 0.03, (len(colours), non_white)
    bar = (0x4C, 0x72, 0xB0)  # the first series colour: the SVG charts were drawn
    assert sum(n for n, rgb in colours if all(abs(a - b) < 8 for a, b in zip(rgb, bar, strict=True))) > 200

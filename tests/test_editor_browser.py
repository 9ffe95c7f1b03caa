"""The web editor (pixelface.editing.editor_app, served as scripts/editor.py serves it) driven in a real headless
Chromium: a painted mask and a caption give one face per seed, a photo is inverted and edited, bad input
comes back as one line, and the page loads nothing from outside 127.0.0.1.

Needs the optional packages of requirements-editor.txt and Debian's chromium (never `playwright install`:
Playwright is only the driver here); without them the tests are skipped, saying which is missing."""
import importlib.util
import io
import os
import shutil
import socket
import time

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the editor needs gradio: pip install -r requirements-editor.txt")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs playwright: pip install -r requirements-editor.txt")
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                reason=f"{CHROMIUM} missing: apt-get install chromium")

from pixelface import PixelFace  # noqa: E402
from pixelface.core.config import resolve_path  # noqa: E402
from pixelface.data.masks import LABEL_ID, color_to_label, label_to_color  # noqa: E402
from pixelface.editing import editor_app

# Chromium without a sandbox (root in a container), a GPU, or any traffic of its own.
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 60_000  # one model call on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pf(ckpt):
    return PixelFace.load(ckpt, device="cpu")


@pytest.fixture(scope="module")
def url(pf, tmp_path_factory):
    """The editor on a free local port, served from a background thread as scripts/editor.py serves it;
    gradio's upload cache in a temporary folder."""
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    app = editor_app.build_app(pf, parser=None, dataset_masks=editor_app.dataset_masks(pf.cfg))
    address = editor_app.launch(app, "127.0.0.1", free_port(), block=False)
    yield address
    app.close()
    os.environ.pop("GRADIO_TEMP_DIR", None)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, url):
    """A fresh page on the editor; at the end, every request it made must have gone to the editor itself."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    hosts = set()
    page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
    page.goto(url)
    page.wait_for_selector("#gen-button", timeout=WAIT_MS)
    yield page
    context.close()
    assert hosts == {url.split("/")[2]}, f"the page reached beyond the editor: {sorted(hosts)}"


def dataset_files(pf):
    """(mask, image) paths of the second face of the checkpoint's dataset."""
    root = resolve_path(pf.cfg, "DATA.ROOT")
    mask = editor_app.dataset_masks(pf.cfg)[1]
    return mask, root / pf.cfg.DATA.IMAGE_DIR / f"{mask.stem}.{pf.cfg.DATA.IMAGE_EXT}"


def pictures(page, selector: str) -> list[np.ndarray]:
    """The pixels of every <img> under `selector`, fetched as the page fetched them."""
    sources = [img.get_attribute("src") for img in page.query_selector_all(f"{selector} img")]
    return [np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")) for src in sources]


def wait_for_picture(page, selector: str) -> np.ndarray:
    page.wait_for_selector(f"{selector} img", timeout=WAIT_MS)
    return pictures(page, selector)[0]


def event(page, action) -> None:
    """Do `action` (a click, an upload) and wait until the event it triggers has finished: gradio shows a
    status tracker over each output from the moment the event joins the queue until its result is shown (and
    keeps it showing 'Error' after a failed one)."""
    with page.expect_response(lambda response: "/queue/join" in response.url, timeout=WAIT_MS):
        action()
    page.wait_for_function("Array.from(document.querySelectorAll('[data-testid=status-tracker]:not(.hide)'))"
                           ".every(e => e.innerText.trim().startsWith('Error'))", timeout=WAIT_MS)


def wait_for_new_look(page, selector: str, action) -> None:
    """Do `action` and wait until the element `selector` looks different and then still for a moment: mask
    loads show no progress overlay (so that a failed one keeps the canvas), only their result."""
    element = page.locator(selector)
    before = element.screenshot()
    action()
    deadline, last = time.time() + WAIT_MS / 1000, before
    while time.time() < deadline:
        time.sleep(0.3)
        now = element.screenshot()
        if now == last != before:
            return
        last = now
    raise AssertionError(f"{selector} did not change")


def error_toast(page, text: str) -> str:
    """The whole text of the error toast gradio shows with `text` in it, once it shows."""
    toast = page.locator(".toast-body.error", has_text=text).first
    toast.wait_for(timeout=WAIT_MS)
    return toast.inner_text()


def choose_brush(page, canvas: str, label: str) -> None:
    """Choose the brush class `label` (the brush takes the class's colour) and the brush tool of `canvas`."""
    page.click(f"{canvas}-class input")
    event(page, page.get_by_role("option", name=label, exact=True).click)
    page.click(f"{canvas} button[aria-label='Brush']")


def drag_stroke(page, canvas: str) -> None:
    """Drag a horizontal stroke across the top of `canvas`'s picture with the chosen brush."""
    box = page.locator(f"{canvas} canvas").first.bounding_box()
    x, y = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.25
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + box["width"] * 0.3, y, steps=3)  # each step redraws the canvas in software: slow
    page.mouse.up()


def test_generate_tab_paints_a_mask_and_gives_one_face_per_seed(pf, page, tmp_path):
    mask, image = dataset_files(pf)
    page.set_input_files("#gen-mask-upload input[type=file]", str(image))   # a photo is no mask
    message = error_toast(page, "off the CelebAMask-HQ palette")
    assert f"mask {image.name}: " in message and "gradio" not in message    # named as the user named it
    page.click("#gen-dataset-mask input")
    wait_for_new_look(page, "#gen-canvas", page.get_by_role("option", name=mask.name, exact=True).click)
    page.fill("#gen-caption textarea", "she has blond hair and wears lipstick")
    page.fill("#gen-seeds textarea", "abc")
    page.click("#gen-button")
    error_toast(page, "seeds 'abc': expected numbers and ranges like 0-7,10")
    page.fill("#gen-seeds textarea", "0-1")
    choose_brush(page, "#gen-canvas", "14 hat")
    for _ in range(3):  # a stroke drawn while the canvas is still settling after the mask load can be lost
        drag_stroke(page, "#gen-canvas")
        page.wait_for_timeout(500)
        event(page, lambda: page.click("#gen-button"))
        page.wait_for_function("document.querySelectorAll('#gen-faces img').length == 2", timeout=WAIT_MS)
        used = wait_for_picture(page, "#gen-mask-used")
        used_labels = pf.labels(color_to_label(used))
        changed = used_labels != pf.labels(mask)   # the chosen dataset mask, but for the stroke
        if changed.sum() > 10:
            break
    page.screenshot(path=tmp_path / "generate.png", full_page=True)

    faces = pictures(page, "#gen-faces")
    assert all(face.shape == (pf.size, pf.size, 3) for face in faces)
    assert not np.array_equal(faces[0], faces[1]), "two seeds gave the same face"
    assert 10 < changed.sum() < 0.2 * changed.numel(), int(changed.sum())
    assert (used_labels[changed] == LABEL_ID["hat"]).float().mean() > 0.8, "the stroke is not in the mask used"
    for seed, face in enumerate(faces):  # the page shows the generator's own pixels for the mask it shows
        expected = pf.generate(used_labels, "she has blond hair and wears lipstick", seeds=[seed])[0]
        assert np.array_equal(face, np.asarray(expected)), seed
    assert "Traceback" not in page.content()


def test_edit_tab_inverts_a_photo_and_edits_its_text(pf, page, tmp_path):
    mask, image = dataset_files(pf)
    page.get_by_role("tab", name="Edit a photo").click()
    page.click("#edit-button")
    error_toast(page, "nothing to edit yet: invert a photo first")
    event(page, lambda: page.set_input_files("#edit-photo input[type=file]", str(image)))
    wait_for_new_look(page, "#edit-photo-mask",
                      lambda: page.set_input_files("#edit-mask-upload input[type=file]", str(mask)))
    page.fill("#edit-caption textarea", "she has brown hair")
    page.fill("#edit-steps input", "3")
    page.click("#edit-invert")
    reconstruction = wait_for_picture(page, "#edit-reconstruction")
    original = wait_for_picture(page, "#edit-original")
    assert page.input_value("#edit-text textarea") == "she has brown hair"  # the edit starts from the caption
    page.fill("#edit-text textarea", "he has black hair and a beard")
    page.click("#edit-button")
    edited = wait_for_picture(page, "#edit-result")
    page.screenshot(path=tmp_path / "edit.png", full_page=True)

    assert original.shape == reconstruction.shape == edited.shape == (pf.size, pf.size, 3)
    assert np.array_equal(original, np.asarray(Image.open(image).convert("RGB")))  # the photo, at the model's size
    assert not np.array_equal(edited, reconstruction), "the text edit changed nothing"
    assert "Traceback" not in page.content()


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("dlib", "face_recognition_models", "skimage")),
                    reason="needs the 'align' extra and scikit-image: pip install -r requirements-align.txt")
def test_edit_tab_aligns_an_unaligned_photo_and_puts_the_edit_back(pf, page, tmp_path):
    """A photo that is no face crop (the astronaut turned and shrunk on a brick wall): the page shows the face
    found and its aligned crop, inverts that crop, and shows the edit put back into the whole photo, which is
    byte-identical to the photo outside the feathered face region."""
    from test_face_alignment import brick, place, round_face_labels
    from pixelface.editing.face_crop import face_crop
    from pixelface.editing.paste_back import photo_weight
    from skimage import data
    scene = place(brick(480, 360), data.astronaut(), 20, 0.8, (240, 180))
    Image.fromarray(scene).save(tmp_path / "scene.png")
    labels = round_face_labels(pf.size)
    Image.fromarray(label_to_color(labels.astype(np.uint8))).save(tmp_path / "mask.png")
    page.get_by_role("tab", name="Edit a photo").click()
    event(page, lambda: page.set_input_files("#edit-photo input[type=file]", str(tmp_path / "scene.png")))
    boxed, crop = wait_for_picture(page, "#edit-faces"), wait_for_picture(page, "#edit-aligned")
    expected = face_crop(Image.fromarray(scene), pf.size, "auto")
    assert boxed.shape == scene.shape and np.array_equal(crop, expected.crop)
    wait_for_new_look(page, "#edit-photo-mask",
                      lambda: page.set_input_files("#edit-mask-upload input[type=file]", str(tmp_path / "mask.png")))
    page.fill("#edit-caption textarea", "she has blond hair")
    page.fill("#edit-steps input", "3")
    page.click("#edit-invert")
    assert np.array_equal(wait_for_picture(page, "#edit-original"), expected.crop)
    page.fill("#edit-text textarea", "she has black hair")
    page.click("#edit-button")
    whole = wait_for_picture(page, "#edit-photo-result")
    page.screenshot(path=tmp_path / "photo_edit.png", full_page=True)
    outside = photo_weight(labels, expected.alignment) == 0
    assert whole.shape == scene.shape and np.array_equal(whole[outside], scene[outside])
    assert not np.array_equal(whole, scene), "nothing was put back"


def test_an_upload_beyond_the_limit_is_refused_before_it_reaches_the_disk(url):
    """The server refuses (413) an upload larger than editor_app.MAX_UPLOAD; nothing lands in its cache."""
    import urllib.error
    import urllib.request
    limit = int(editor_app.MAX_UPLOAD.removesuffix("mb")) * 1024 * 1024
    boundary = "pixelfaceboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"\0" * (limit + 1) + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url.rstrip("/") + "/gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    cache = os.environ["GRADIO_TEMP_DIR"]
    assert not [p for p in _files_under(cache) if p.endswith("big.png")]


def _files_under(folder: str) -> list[str]:
    return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]

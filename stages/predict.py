"""Stage `predict`: saliency maps for any JPEG or PNG images (`ser predict IMAGES... --model model.pt --out DIR`).

The predictor is the saliency network of a `ser pretrain-saliency` model.pt or of a SER run's model.pt
(`ser_cli.runs.saliency_model`). Neither records its input size, so `--size HxW` gives it, or it is read from
the training data file the model.pt names when that file is still there with the same fingerprint. Images
(`ser_cli.data.image_files`) are decoded and predicted in batches at that size; each map is resized back to its
image's own size and written as `DIR/NAME.png` (grey, 255 at its maximum) and `DIR/NAME_overlay.png` (a heat overlay,
`ser_cli.plots.overlay`), and with `--h5` every map at the model size goes into one HDF5 file
(`ser_cli.data.predictions_file`). DIR is an `OutputFolder`: files are staged in `DIR.partial/` and moved in at the
end, a folder holding files ser did not write is refused, and replacing another invocation's maps needs
`--overwrite`. A bad image gets one line on stderr and is skipped; the caller exits 1 when any was.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ser_cli.data.image_files import ImageFile, find_images, read_image
from ser_cli.data.maps import quantize_maps
from ser_cli.data.predictions_file import PredictionsWriter, check_replaceable, predictions_writer
from ser_cli.data.store import DataFile
from ser_cli.plots.overlay import heat_overlay
from ser_cli.runs.model_input import size_warning, warn
from ser_cli.runs.saliency_model import SaliencyModel, load_saliency_model, map_at
from ser_cli.runtime.device import resolve_device
from ser_cli.runtime.disk import check_free_space
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_folder import OutputFolder, check_disjoint, identity_hash
from ser_cli.runtime.output_lock import locks_outputs
from ser_cli.runtime.progress import log, progress_bar, stderr_console

COMMAND = "ser predict"
SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
MIN_SIDE = 16  # the encoder downsamples by 32; below 16 pixels its last stage has nothing left to see
MAX_SIDE = 4096  # a batch at a larger input size would not fit in memory (the paper's is 288x384)


@dataclass
class PredictResult:
    """What was written and what was skipped."""

    out: Path
    h5: Path | None
    model: Path
    size: tuple[int, int]
    written: list[dict[str, str]] = field(default_factory=list)  # image, map, overlay
    skipped: list[dict[str, str]] = field(default_factory=list)  # image, reason

    def summary(self) -> dict[str, Any]:
        """The `--json` summary: counts, output paths, and every image's files or reason for skipping."""
        return {"out": str(self.out), "h5": str(self.h5) if self.h5 else None, "model": str(self.model),
                "model_input_size": list(self.size), "images": len(self.written) + len(self.skipped),
                "written": len(self.written), "skipped": len(self.skipped), "maps": self.written,
                "skipped_images": self.skipped}


@locks_outputs("out", "h5", torchrun=False)
def run(images: list[str], model: Path, out: Path, h5: Path | None = None, size: str | None = None,
        batch_size: int = 16, device: str = "auto", overwrite: bool = False) -> PredictResult:
    """Predict, write `out/NAME.png`, `out/NAME_overlay.png` and optionally `h5`; see the module docstring."""
    if batch_size < 1:
        raise UserError(f"--batch-size: must be >= 1 (got {batch_size})")
    given_size = parse_size(size) if size is not None else None
    files, roots = find_images(images)
    outputs = {"--out": out, "--h5": h5}
    check_disjoint(outputs, {"--model": model})
    for root in roots:
        check_disjoint(outputs, {"IMAGES": root})
    net = load_saliency_model(model, resolve_device(device))
    trained = net.trained_size
    hw = given_size or trained or training_size(net)
    warning = size_warning(model, trained, hw, "--size")
    if warning:
        warn(warning)
    identity = identity_hash({"model": net.sha256, "size": hw, "images": [_stat(f) for f in files]})
    folder = OutputFolder(Path(out), COMMAND, identity, overwrite)
    folder.state()  # refuses a folder we may not write before any work
    if h5 is not None:
        check_replaceable(h5, identity, overwrite)
    result = PredictResult(Path(out), h5, Path(model), hw)
    staging = folder.start()
    try:
        with contextlib.ExitStack() as stack:
            attrs = {"model": str(model), "model_sha256": net.sha256, "identity": identity}
            writer = stack.enter_context(predictions_writer(h5, hw, attrs, len(files))) if h5 is not None else None
            _predict_all(net, files, hw, batch_size, staging, writer, result)
        folder.commit()
    except BaseException:
        folder.abandon()
        raise
    return result


def parse_size(text: str) -> tuple[int, int]:
    """`HxW` (e.g. `288x384`) -> (H, W)."""
    match = SIZE_PATTERN.match(text)
    if not match or not all(MIN_SIDE <= int(side) <= MAX_SIDE for side in (match[1], match[2])):
        raise UserError(f"--size: must be HEIGHTxWIDTH with both in {MIN_SIDE}..{MAX_SIDE}, e.g. 288x384 "
                        f"(got {text!r})")
    return int(match[1]), int(match[2])


def training_size(model: SaliencyModel) -> tuple[int, int]:
    """The height and width of the data file `model` was trained on, when it is still there (same fingerprint)."""
    data = Path(model.data) if model.data else None
    if data is not None and data.is_file():
        with contextlib.suppress(UserError):
            info = DataFile(data)
            if info.fingerprint == model.data_fingerprint:
                log(f"predict: input size {info.height}x{info.width}, that of the training data {data}")
                return info.height, info.width
    raise UserError(f"{model.path}: does not record its input size, and its training data ({model.data or 'unknown'}) "
                    "is not at hand to read it from; pass --size HxW, the size it was trained at (e.g. 288x384)")


def _stat(f: ImageFile) -> list[Any]:
    """What identifies an input without reading it: path, output name, size and modification time."""
    st = f.path.stat()
    return [str(f.path.absolute()), f.name, st.st_size, st.st_mtime_ns]


def _predict_all(net: SaliencyModel, files: list[ImageFile], size: tuple[int, int], batch_size: int,
                 staging: Path, writer: PredictionsWriter | None, result: PredictResult) -> None:
    """Batches of decoded images -> maps -> PNGs in `staging` (and rows in `writer`); bad images skipped."""
    with progress_bar() as bar:
        task = bar.add_task("predict", total=len(files), info="")
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            good = [(f, im) for f in chunk if (im := _read(f, result)) is not None]
            if good:
                preds = net.predict([im for _, im in good], size)  # (B, H, W) at the model size
                _check_png_space(result.out, [im for _, im in good])
                for (f, im), pred in zip(good, preds, strict=True):
                    _write_pngs(staging, f, np.asarray(im), map_at(pred, (im.height, im.width)), result)
                if writer is not None:
                    writer.add([f.name for f, _ in good], [str(f.path) for f, _ in good],
                               [(im.height, im.width) for _, im in good], quantize_maps(preds).numpy())
            bar.update(task, advance=len(chunk), info=f"{len(result.skipped)} skipped" if result.skipped else "")


def _check_png_space(out: Path, images: list[Image.Image]) -> None:
    """RunFailure (one line naming --out) unless the batch's PNGs fit beside `out` (in its staging folder): a PNG
    that filled the disk while the --h5 file is open would leave HDF5 unable to close that file cleanly
    (`runtime.disk`). 4 bytes a pixel (grey map and RGB overlay, uncompressed) bound them."""
    check_free_space(out, sum(4 * im.width * im.height for im in images), f"the PNGs of {len(images)} image(s)")


def _read(f: ImageFile, result: PredictResult) -> Image.Image | None:
    """The decoded image, or None after one line on stderr."""
    try:
        return read_image(f.path)
    except UserError as err:
        stderr_console.print(f"skipped {err}", markup=False, highlight=False, soft_wrap=True)
        result.skipped.append({"image": str(f.path), "reason": str(err)})
        return None


def _write_pngs(staging: Path, f: ImageFile, image: np.ndarray, grey: np.ndarray, result: PredictResult) -> None:
    """`NAME.png` (the grey map) and `NAME_overlay.png` in the staging folder; recorded at their final place."""
    Image.fromarray(grey).save(staging / f"{f.name}.png")
    Image.fromarray(heat_overlay(image, grey)).save(staging / f"{f.name}_overlay.png")
    result.written.append({"image": str(f.path), "map": str(result.out / f"{f.name}.png"),
                           "overlay": str(result.out / f"{f.name}_overlay.png")})

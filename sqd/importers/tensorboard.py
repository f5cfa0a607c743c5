"""`sqd import tensorboard DIR`: TensorBoard event files, read with TensorBoard's own reader.

Every directory under DIR (DIR included) that holds `*tfevents*` files is one run, as in TensorBoard. Per run:
* scalars (`add_scalar`, TF1 `simple_value` and TF2 scalar tensors) → points, the tag mapped by
  stylegan_keys.metric_key (so R3GAN/StyleGAN's own export lands on `loss/G`, `eval/fid`, …; other tags stay
  as they are); the event's step and wall time are kept;
* one image tag (`--samples-tag`, default: the first whose name says fake / sample / gen / grid) → the sample
  timeline, PNG images only;
* hyperparameters written with the hparams plugin (`add_hparams`, `hp.hparams`) → the run's config.

Reading goes through `EventAccumulator` (which also drops the orphaned steps of a restarted run, as TensorBoard
does). Before that every file is checked record by record with TensorBoard's `RawEventFileLoader`: that reader
stops quietly at a damaged record, so the check adds up the records' sizes and compares them with the file's,
and names the first record that is cut short or corrupt. Identity: the first event file's name (it holds the
writer's start time, host and pid), so a moved directory imports into the same run.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from sqd.importers.common import ImportedRun, ImportFormatError, Point, finite_times, stable_run_id
from sqd.importers.stylegan_keys import metric_key

SAMPLE_TAG = re.compile(r"fake|sample|gen|grid", re.IGNORECASE)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RECORD_OVERHEAD = 16  # TFRecord framing: length (8) + its CRC (4) + the data's CRC (4)


def run_dirs(root: Path) -> list[Path]:
    """Directories under `root` (itself included) holding event files, in name order."""
    found = {p.parent for p in root.rglob("*tfevents*") if p.is_file()}
    return sorted(found)


def check_event_file(path: Path) -> int:
    """Raise ImportFormatError at the first record that is truncated, fails its checksum or is not an Event;
    returns the number of records."""
    from google.protobuf.message import DecodeError
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    size = path.stat().st_size
    consumed = records = 0
    for records, raw in enumerate(RawEventFileLoader(str(path)).Load(), start=1):
        try:
            event_pb2.Event.FromString(raw)
        except DecodeError as exc:
            raise ImportFormatError(path, f"record {records} (byte {consumed})",
                                    f"not a TensorBoard Event ({exc})") from None
        consumed += len(raw) + RECORD_OVERHEAD
    if consumed != size:
        raise ImportFormatError(path, f"record {records + 1} (byte {consumed} of {size})",
                                "cut short or corrupt (its length or checksum does not match): the file was "
                                "truncated or damaged")
    return records


def _hparams(acc: Any) -> dict[str, Any]:
    from tensorboard.plugins.hparams import metadata

    try:
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME).get(metadata.SESSION_START_INFO_TAG)
    except KeyError:  # no hparams written in this run
        return {}
    if content is None:
        return {}
    info = metadata.parse_session_start_info_plugin_data(content)
    out: dict[str, Any] = {}
    for name, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        out[name] = None if kind is None else getattr(value, kind)
    return out


def _scalars(acc: Any) -> list[Point]:
    from tensorboard.util import tensor_util

    points: list[Point] = []
    tags = acc.Tags()
    for tag in tags["scalars"]:
        points += [(metric_key(tag), e.step, e.value, None, e.wall_time) for e in acc.Scalars(tag)]
    for tag in tags["tensors"]:
        if acc.SummaryMetadata(tag).plugin_data.plugin_name != "scalars":
            continue  # TF2 writes scalars as tensors; other tensor summaries (text, pr curves…) are not imported
        points += [(metric_key(tag), e.step, float(tensor_util.make_ndarray(e.tensor_proto)), None, e.wall_time)
                   for e in acc.Tensors(tag)]
    return [p if math.isfinite(p[4]) else (*p[:4], 0.0) for p in points]  # type: ignore[misc]


def _samples(acc: Any, samples_tag: str | None) -> tuple[str | None, list[tuple[int, Path | bytes]]]:
    images = acc.Tags()["images"]
    tag = samples_tag if samples_tag in images else next((t for t in images if SAMPLE_TAG.search(t)), None)
    if tag is None:
        return None, []
    grids: dict[int, bytes] = {}
    for event in acc.Images(tag):
        if event.encoded_image_string.startswith(PNG_SIGNATURE):
            grids.setdefault(event.step, event.encoded_image_string)
    return tag, sorted(grids.items())


def read_run(run_dir: Path, root: Path, name: str | None = None, samples_tag: str | None = None,
             several: bool = False) -> ImportedRun:
    """Check and read one TensorBoard run directory."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    files = sorted(p for p in run_dir.iterdir() if p.is_file() and "tfevents" in p.name)
    for path in files:
        check_event_file(path)
    acc = ea.EventAccumulator(str(run_dir), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0, ea.TENSORS: 0})
    acc.Reload()
    points = _scalars(acc)
    tag, samples = _samples(acc, samples_tag)
    relative = run_dir.relative_to(root).as_posix() if run_dir != root else root.name
    default = relative if several else root.name if run_dir == root else relative
    first, last = finite_times(points)
    notes = f"imported from TensorBoard logs in {run_dir}" + (f"; samples from image tag '{tag}'" if tag else "")
    return ImportedRun(
        run_id=stable_run_id("tb", files[0].name, relative), name=(f"{name}/{relative}" if several else name)
        if name else default, source=f"tensorboard {run_dir}", config=_hparams(acc),
        tags=["imported", "tensorboard"], notes=notes, started_at=first, finished_at=last, points=points,
        samples=samples)

"""Writing rendered files all-or-nothing, and cleaning up what an earlier render wrote."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ajour_build.core.errors import OutputError

# What the last render wrote. No .json/.yaml/.yml suffix: `kubectl apply -f DIR` reads
# only those, so the directory holds nothing but manifests for it.
INDEX = ".ajour-render"
OLD_INDEX = ".ajour-render.json"  # the name earlier releases used: removed when found


def _previous(out_dir: Path) -> list[str]:
    names: list[str] = []
    for index in (INDEX, OLD_INDEX):
        try:
            data = json.loads((out_dir / index).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        files = data.get("files") if isinstance(data, dict) else None
        if isinstance(files, list):
            names += [f for f in files if isinstance(f, str) and "/" not in f]
    return [f for f in names if f.endswith(".yaml")]


def write_files(out_dir: Path, files: dict[str, str]) -> list[Path]:
    """Write ``files`` (name -> text) into ``out_dir``.

    Everything is written to a temporary directory beside the target first and then moved
    into place file by file with ``os.replace``, so a reader never sees a half-written
    file. Files that the previous render wrote and this one does not are removed; other
    files in ``out_dir`` are never touched. The record of what was written (``INDEX``) is
    not a manifest suffix, so ``kubectl apply -f out_dir`` reads the manifests only.
    """
    for name in files:
        if "/" in name or name.startswith("."):
            raise OutputError(f"refusing to write unsafe output name {name!r}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        stale = [n for n in _previous(out_dir) if n not in files]
        staging = Path(tempfile.mkdtemp(prefix=".ajour-render-", dir=out_dir))
        try:
            for name, text in files.items():
                (staging / name).write_text(text, encoding="utf-8")
            index = json.dumps({"files": sorted(files)}, indent=2) + "\n"
            (staging / INDEX).write_text(index, encoding="utf-8")
            for name in files:
                os.replace(staging / name, out_dir / name)
            os.replace(staging / INDEX, out_dir / INDEX)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for name in stale:
            (out_dir / name).unlink(missing_ok=True)
        (out_dir / OLD_INDEX).unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write to {str(out_dir)!r}: {exc.strerror or exc}") from exc
    return [out_dir / name for name in sorted(files)]

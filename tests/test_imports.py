"""`import sepconv` stays light: no torch, triton, cupy, dask, matplotlib (or the CLI's
typer/rich)."""

import subprocess
import sys


def test_import_sepconv_does_not_import_heavy_frameworks() -> None:
    code = (
        "import sys, sepconv; "
        "heavy = [m for m in ('torch', 'dask', 'matplotlib', 'distributed', 'zarr', 'typer', "
        "'rich', 'sklearn', 'skimage', 'nibabel', 'cv2', 'cupy', 'triton') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import sepconv loaded: {out.stdout.strip()}"

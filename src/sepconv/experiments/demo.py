"""``sepconv demo``: the first thing a new user sees (under two minutes, no arguments).

Analyses a few kernels; filters a real photograph (scikit-image's ``camera``) and a real MRI
volume (nibabel's ``anatomical.nii`` test volume, upsampled to a realistic size) with a
separable, a low-rank and a non-separable kernel, timing sepconv against scipy.ndimage;
prints the depthwise-separable cost table and a MobileNet v1 profile summary. Writes
``report.md`` and PNGs into the output folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .. import cost, kernels
from .._timing import median_times
from ..factor import separate
from ..filters import correlate, gaussian_filter
from ..plan import make_plan
from ._common import Report, Timer, setup_matplotlib, shell_command

#: where ``sepconv demo`` writes when ``--out`` is not given
DEFAULT_OUT = Path("sepconv-demo")

ANALYSED = (
    "gaussian:sigma=2",
    "sobel:axis=0",
    "laplacian_of_gaussian:sigma=2",
    "gabor:sigma=3,theta=30,frequency=0.15",
    "disk:radius=6,antialias=true",
    "line:length=9,angle=30",
    "laplacian_of_gaussian:sigma=1.5,ndim=3",
)

#: Longest label of a filtered kernel: the console's tables (110 columns when not a terminal)
#: show it on one line. Labels name no rank: the plan column shows the rank the planner chose
#: on this run, and the report compares it with the kernel's exact rank.
MAX_LABEL = 36

# (label, spec); scipy's way of doing the same thing is picked in _filter_all
IMAGE_KERNELS = (
    ("separable: Gaussian sigma=3", "gaussian:sigma=3"),
    # phase=90 (degrees) makes the carrier a sine: an odd, edge-detecting Gabor
    ("low rank: odd Gabor at 30 deg", "gabor:sigma=4,theta=30,frequency=0.08,phase=90"),
    ("non-separable: line 21 px at 30 deg", "line:length=21,angle=30"),
)
VOLUME_KERNELS = (
    ("separable: Gaussian sigma=2", "gaussian:sigma=2,ndim=3"),
    ("low rank: LoG sigma=1.5", "laplacian_of_gaussian:sigma=1.5,ndim=3"),
    ("non-separable: ball r=3", "ball:radius=3,antialias=true"),
)


def photograph() -> tuple[np.ndarray, str]:
    try:
        from skimage import data

        return data.camera().astype(np.float32) / 255.0, "scikit-image camera (512x512)"
    except ImportError:  # pragma: no cover - scikit-image is in the experiments extra
        y, x = np.mgrid[-1:1:512j, -1:1:512j]
        img = ((x**2 + y**2) < 0.5).astype(np.float32) + 0.2 * np.sin(20 * x)
        return img.astype(np.float32), "synthetic 512x512 test image"


def volume(zoom: int = 4) -> tuple[np.ndarray, str]:
    try:
        import nibabel
        from nibabel.testing import data_path

        path = os.path.join(data_path, "anatomical.nii")
        image: Any = nibabel.load(path)
        vol = np.asarray(image.get_fdata(), dtype=np.float32)
        vol = ndimage.zoom(vol, zoom, order=1)  # 33x41x25 -> 132x164x100 for zoom 4
        vol /= vol.max()
        shape = "x".join(map(str, vol.shape))
        return vol, f"T1 MRI {shape} (nibabel's anatomical.nii upsampled x{zoom})"
    except ImportError:  # pragma: no cover - nibabel is in the io extra
        z, y, x = np.mgrid[-1:1:96j, -1:1:96j, -1:1:96j]
        vol = ((x**2 + y**2 + z**2) < 0.5).astype(np.float32)
        return vol, "synthetic 96^3 sphere"


def axial_slice(vol: np.ndarray) -> tuple[np.ndarray, str]:
    """The middle axial slice of a volume as a person expects to see it, and its label.

    ``anatomical.nii`` is stored (x: right to left, y: back to front, z: up), so the slice
    ``vol[:, :, k]`` is transposed and flipped to put the front of the head at the top and
    the patient's left on the right (the radiological convention).
    """
    k = vol.shape[2] // 2
    return vol[:, :, k].T[::-1], f"axial slice {k} of {vol.shape[2]}, front at top"


def _filter_all(
    img: np.ndarray, table: Any, repeats: int, ranks: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """Filter ``img`` with each kernel of ``table`` both ways; ``ranks``: exact ranks already
    known (spec -> rank), the rest are computed where the plan is separable or low rank."""
    rows = []
    for label, spec in table:
        K = kernels.from_spec(spec)
        plan = make_plan(K, img.shape, size=img.size)
        exact = (ranks or {}).get(spec)
        if exact is None and plan.method in ("separable", "lowrank"):
            exact = separate(K).rank
        if spec.startswith("gaussian"):
            sigma = float(spec.split("sigma=")[1].split(",")[0])
            ours = lambda s=sigma: gaussian_filter(img, s)  # noqa: E731
            ref = lambda s=sigma: ndimage.gaussian_filter(img, s)  # noqa: E731
            scipy_way = "ndimage.gaussian_filter"
        else:
            ours = lambda K=K: correlate(img, K)  # noqa: E731
            ref = lambda K=K: ndimage.correlate(img, K)  # noqa: E731
            scipy_way = "ndimage.correlate"
        t = median_times({"sepconv": ours, "scipy": ref}, repeats, budget_s=5.0)
        result = ours()
        err = float(np.abs(result - ref()).max() / max(1e-12, np.abs(ref()).max()))
        rows.append(
            {
                "label": label,
                "spec": spec,
                "shape": list(K.shape),
                "plan": plan.method,
                "rank": plan.rank,
                "exact_rank": exact,
                "sepconv_ms": t["sepconv"] * 1e3,
                "scipy_ms": t["scipy"] * 1e3,
                "speedup": t["scipy"] / t["sepconv"],
                "scipy_way": scipy_way,
                "rel_diff": err,
                "result": result,
            }
        )
    return rows


def rank_notes(rows: list[dict[str, Any]]) -> list[str]:
    """A sentence for each row whose plan uses more terms than the kernel's exact rank."""
    notes = []
    for r in rows:
        if r["rank"] and r["exact_rank"] and r["rank"] > r["exact_rank"]:
            notes.append(
                f"{r['label']}: the planner's time-bounded search settled for rank "
                f"{r['rank']} on this run; the kernel is exactly rank {r['exact_rank']} "
                "(`sepconv.separate`), so the filter ran "
                f"{r['rank'] - r['exact_rank']} more separable term(s) than needed "
                f"(its result is still exact: max rel. difference {r['rel_diff']:.1e})."
            )
    return notes


def plan_text(r: dict[str, Any]) -> str:
    """The plan and its rank, with the kernel's exact rank where the plan uses more."""
    if not r["rank"]:
        return r["plan"]
    text = f"{r['plan']} rank {r['rank']}"
    if r["exact_rank"] and r["rank"] > r["exact_rank"]:
        text += f" (exact rank {r['exact_rank']})"
    return text


def mobilenet_summary() -> list[str]:
    """MobileNet v1 and its full-conv twin, profiled (counts only: no timing, fast)."""
    try:
        from ..nn import profile
        from ..nn.models import mobilenet_v1
    except ImportError:  # pragma: no cover - torch is the nn extra
        return ["(MobileNet v1 profile skipped: install the nn extra for PyTorch)"]
    lines = []
    for label, full in (("MobileNet v1 1.0-224", False), ("Conv MobileNet (full convs)", True)):
        prof = profile(mobilenet_v1(full_conv=full), (1, 3, 224, 224), measure=False)
        lines.append(
            f"{label}: {prof.params / 1e6:.2f}M parameters, {prof.macs / 1e6:,.0f}M mult-adds"
        )
    lines.append(
        "(Howard et al. 2017, Table 4: 4.2M / 569M and 29.3M / 4866M; "
        "`sepconv profile mobilenet_v1` adds per-layer times against the roofline)"
    )
    return lines


#: Columns of the demo's conv cost table (:func:`conv_cost_rows`).
CONV_COLUMNS = ["C_in -> C_out", "standard", "depthwise-separable", "ratio"]


def conv_cost_rows() -> list[list[str]]:
    """MACs per output pixel of typical 3x3 layers, standard vs depthwise-separable."""
    rows = []
    for cin, cout in ((32, 64), (64, 128), (128, 256), (256, 512), (512, 1024)):
        c = cost.compare_conv(cin, cout, 3)
        standard, ds = c["standard"].macs_per_pixel, c["depthwise_separable"].macs_per_pixel
        rows.append([f"{cin} -> {cout}", f"{standard:,}", f"{ds:,}", f"{c['ratio']['macs']:.2f}x"])
    return rows


def run(out: Path, *, quick: bool = False, progress: Any = None) -> Report:
    report = Report("demo", "sepconv demo", out.parent, quick)
    report.name = out.name
    args = ["sepconv", "demo"]
    if Path(out) != DEFAULT_OUT:
        args += ["--out", str(out)]
    report.command = shell_command(*args, *(["--quick"] if quick else []))
    repeats = 3
    with Timer() as timer:
        analysed = []
        ranks = {}
        for spec in ANALYSED:
            K = kernels.from_spec(spec)
            f = separate(K)
            ranks[spec] = f.rank
            f1 = f if f.rank <= 1 else separate(K, rank=1)
            analysed.append(
                [
                    spec,
                    "x".join(map(str, f.shape)),
                    f.rank,
                    f"{f.direct_macs} -> {f.macs}",
                    f"{f.speedup:.1f}x",
                    f1.error,
                ]
            )
        photo, photo_name = photograph()
        vol, vol_name = volume(2 if quick else 4)
        image_rows = _filter_all(photo, IMAGE_KERNELS, repeats, ranks)
        volume_rows = _filter_all(vol, VOLUME_KERNELS, repeats, ranks)
    report.seconds = timer.seconds
    report.text("## How separable are common kernels?")
    report.table(
        ["kernel", "shape", "rank", "MACs direct -> passes", "speed-up (MACs)", "rank-1 error"],
        analysed,
        "llrrrr",
    )
    for title, name, rows in (
        ("Filtering a photograph", photo_name, image_rows),
        ("Filtering a 3-D volume", vol_name, volume_rows),
    ):
        report.text(f"## {title}: {name}, float32")
        report.table(
            [
                "kernel",
                "shape",
                "plan (method='auto')",
                "sepconv ms",
                "scipy.ndimage ms",
                "speed-up",
                "max rel. difference",
            ],
            [
                [
                    r["label"],
                    "x".join(map(str, r["shape"])),
                    plan_text(r),
                    f"{r['sepconv_ms']:.1f}",
                    f"{r['scipy_ms']:.1f} ({r['scipy_way']})",
                    f"{r['speedup']:.1f}x",
                    f"{r['rel_diff']:.1e}",
                ]
                for r in rows
            ],
            "llrrrrr",
        )
        notes = rank_notes(rows)
        if notes:
            report.text("\n".join(f"- {note}" for note in notes))
    conv_rows = conv_cost_rows()
    report.text("## Standard vs depthwise-separable 3x3 convolution (MACs per output pixel)")
    report.table(CONV_COLUMNS, conv_rows)
    mobilenet = mobilenet_summary()
    report.text(
        "## MobileNet v1, profiled by `sepconv.nn.profile`",
        "\n".join(f"- {line}" for line in mobilenet),
    )
    report.results.update(
        analysed=analysed,
        conv_costs=conv_rows,
        mobilenet=mobilenet,
        rank_notes=rank_notes(image_rows + volume_rows),
        image=[{k: v for k, v in r.items() if k != "result"} for r in image_rows],
        volume=[{k: v for k, v in r.items() if k != "result"} for r in volume_rows],
    )

    plt = setup_matplotlib()
    fig, axes = plt.subplots(2, 4, figsize=(17, 9.2))
    vol_slice, slice_name = axial_slice(vol)
    for row, (img, rows, name) in enumerate(
        ((photo, image_rows, photo_name), (vol_slice, volume_rows, vol_name))
    ):
        ax = axes[row, 0]
        im = ax.imshow(img, cmap="gray")
        # the volume's name on two lines, then which slice is shown
        title = name if row == 0 else name.replace(" (", "\n(", 1) + f",\n{slice_name}"
        ax.set_title(f"input: {title}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        for col, r in enumerate(rows, start=1):
            res = r["result"] if row == 0 else axial_slice(r["result"])[0]
            ax = axes[row, col]
            signed = res.min() < -1e-3 * max(1e-12, abs(res.max()))
            lim = np.abs(res).max()
            im = ax.imshow(
                res,
                cmap="RdBu_r" if signed else "gray",
                vmin=-lim if signed else None,
                vmax=lim if signed else None,
            )
            ax.set_title(
                f"{r['label']}\nauto: {plan_text(r)}"
                + f"\n{r['sepconv_ms']:.0f} ms vs scipy {r['scipy_ms']:.0f} ms",
                fontsize=9,
            )
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        "sepconv: the same filters as scipy.ndimage, run the cheapest exact way "
        "(intensity colour bars; signed outputs in red/blue)"
    )
    report.figure(
        fig,
        "filters.png",
        "Before and after: a photograph (top) and the middle axial "
        "slice of a 3-D MRI volume (bottom; the whole volume is filtered), with a separable, "
        "a low-rank and a non-separable kernel; times are medians, sepconv vs scipy.ndimage.",
    )
    return report

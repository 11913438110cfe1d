"""results.json, results.md and the PNGs of the reproductions in one output folder.

The experiments share results.json (one key each), so running them into the same folder
gives one report; results.md is rendered from the merged JSON."""
import io
import json
import math
import os

from . import baselines, common, figure1, inception, lr_sweep, smoothness

__all__ = ["EXPERIMENTS", "save"]

EXPERIMENTS = {m.NAME: m for m in (figure1, lr_sweep, inception, smoothness, baselines)}
PLOT_HINT = 'matplotlib is not installed, so no PNG was written; for the plots: ' \
            'pip install "fastbn[plot]"'


def _jsonable(obj):
    """obj with NaN/inf as None (strict JSON) and NumPy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _previous(path):
    """The other experiments' entries of an existing results.json (nothing when it is
    unreadable or not ours: it is then replaced)."""
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in old.items() if k in EXPERIMENTS} if isinstance(old, dict) else {}


def markdown(results):
    sections = [EXPERIMENTS[name].markdown(results[name])
                for name in EXPERIMENTS if name in results]
    return ("# Batch Normalization paper reproduction (fastbn)\n\n"
            "Written by `python -m fastbn reproduce`; see docs/reproduction.md.\n\n"
            + "\n".join(sections))


def save(out_dir, name, result, say=print):
    """Write result under ``name`` into out_dir's results.json and results.md, and
    ``name``.png when matplotlib is importable; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "results.json")
    results = _previous(json_path)
    results[name] = _jsonable(result)
    common.write_atomic(json_path, json.dumps(results, indent=1, allow_nan=False) + "\n")
    md_path = os.path.join(out_dir, "results.md")
    common.write_atomic(md_path, markdown(results))
    written = [json_path, md_path]
    try:
        import matplotlib  # noqa: F401 (only whether it is there)
    except ImportError:
        say(PLOT_HINT)
        return written
    figure = EXPERIMENTS[name].plot(results[name])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    png_path = os.path.join(out_dir, f"{name}.png")
    common.write_atomic(png_path, buffer.getvalue())
    return written + [png_path]

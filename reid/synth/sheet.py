"""Contact sheet of an exported world: crops of a few identities from several cameras beside their
colourised ground-truth IUV and the identity's atlas."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from reid.io import decode_raw, read_image
from reid.viz import colorize_iuv, make_grid


def contact_sheet(market_dir: str | os.PathLike, n_identities: int = 6, per_identity: int = 4) -> np.ndarray:
    """RGB picture: one row per test identity, (crop, IUV) pairs from distinct cameras, then the atlas."""
    root = Path(market_dir)
    by_pid: dict[str, list[Path]] = {}
    for folder in ("query", "bounding_box_test"):
        for path in sorted((root / folder).glob("*.jpg")):
            pid = path.name.split("_")[0]
            if pid not in ("0000", "-1"):
                by_pid.setdefault(pid, []).append(path)
    if not by_pid:
        raise ValueError(f"{root}: no identities found in query/ or bounding_box_test/")
    cells, captions = [], []
    for pid in sorted(by_pid)[:n_identities]:
        seen, chosen = set(), []
        for path in by_pid[pid]:  # one crop per camera first, then fill up
            cam = path.name.split("_")[1][:2]
            if cam not in seen:
                seen.add(cam)
                chosen.append(path)
        chosen += [p for p in by_pid[pid] if p not in chosen]
        chosen = chosen[:per_identity]
        crop = read_image(chosen[0])
        for path in chosen:
            iuv = decode_raw((root / "gt_iuv" / path.parent.name / f"{path.stem}.png").read_bytes())
            cells += [read_image(path), colorize_iuv(iuv)]
            captions += [path.name.split("_")[1][:2], "IUV"]
        blank = np.full_like(crop, 255)
        for _ in range(per_identity - len(chosen)):
            cells += [blank, blank]
            captions += ["", ""]
        cells.append(read_image(root / "textures" / f"{pid}.png"))
        captions.append(f"atlas {pid}")
    h, w = crop.shape[:2]
    return make_grid(cells, 2 * per_identity + 1, captions=captions, cell_size=(h, w))

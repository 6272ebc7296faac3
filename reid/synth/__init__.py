"""The synthetic world (SPEC §3): a textured, articulated mannequin with exact DensePose IUV, seen by
imperfect cameras, exported in Market-1501 and PIT layouts.

Public API: `render_person`, `export_market` / `WorldConfig`, `export_pit` / `PitConfig`;
CLI: ``python -m reid.synth market|pit --out DIR``.
"""

from reid.synth.body import Body, Pose, sample_body, sample_pose
from reid.synth.render import View, render_person
from reid.synth.sheet import contact_sheet
from reid.synth.texture import Outfit, make_atlas, sample_outfit, sibling
from reid.synth.world import PitConfig, PoolConfig, WorldConfig, export_market, export_pit, export_pool

__all__ = [
    "Body", "Pose", "View", "Outfit", "WorldConfig", "PitConfig", "PoolConfig", "render_person", "export_market",
    "export_pit", "export_pool",
    "make_atlas", "sample_outfit", "sibling", "sample_body", "sample_pose", "contact_sheet",
]

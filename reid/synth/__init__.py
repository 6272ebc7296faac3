"""The synthetic world (SPEC §3): a textured, articulated mannequin with exact DensePose IUV, seen by
imperfect cameras, exported in Market-1501 and PIT layouts.

Public API: `render_person`, `export_market` / `WorldConfig`, `export_pit` / `PitConfig`, `export_pool` /
`PoolConfig`, `export_target` / `TargetConfig` (a domain-shifted test-only world, `CameraDomain`);
CLI: ``python -m reid.synth market|pit --out DIR``.
"""

from reid.synth.body import Body, Pose, sample_body, sample_pose
from reid.synth.camera import CameraDomain
from reid.synth.render import View, render_person
from reid.synth.sheet import contact_sheet
from reid.synth.texture import Outfit, make_atlas, sample_outfit, sibling
from reid.synth.world import (
    PitConfig,
    PoolConfig,
    TargetConfig,
    WorldConfig,
    export_market,
    export_pit,
    export_pool,
    export_target,
)

__all__ = [
    "Body", "Pose", "View", "Outfit", "WorldConfig", "PitConfig", "PoolConfig", "TargetConfig", "CameraDomain",
    "render_person", "export_market", "export_pit", "export_pool", "export_target",
    "make_atlas", "sample_outfit", "sibling", "sample_body", "sample_pose", "contact_sheet",
]

"""The articulated mannequin: body shape, walking pose and the 24 DensePose charts as primitives.

Person frame (metres): x = the person's left, y = up, z = the way the person faces; feet at y = 0.
Every body segment is a `Primitive` with an orthonormal local frame whose rows are
(lateral, forward, axis). A point's local coordinates give its chart:

* limbs and torso: U along the axis (0 proximal -> 1 distal), split front/back at the coronal
  plane (forward >= 0 is front), V = angle from the lateral side through front (or back) / pi.
  Lateral points outwards on both sides, so left and right charts are mirror-consistent.
* head: split left/right at the sagittal plane, U bottom -> top, V = angle from the face to the back / pi.
* hands and feet: one chart each, V = full angle around the axis / 2 pi.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reid.parts import PART_NAMES

PART = {name: index for index, name in PART_NAMES.items()}  # name -> DensePose index

LEFT, RIGHT = 1.0, -1.0  # sign of the person-frame x axis on each side


@dataclass(frozen=True)
class Body:
    """Identity-specific shape: overall height (m) and build (width factor)."""

    height: float = 1.72
    build: float = 1.0


@dataclass(frozen=True)
class Pose:
    """A walking pose. Angles in degrees; `jitter` holds small extra joint angles (see JOINTS)."""

    body: Body = field(default_factory=Body)
    phase: float = 0.0  # walk-cycle phase in [0, 2 pi)
    leg_swing: float = 22.0
    arm_swing: float = 20.0
    arm_spread: float = 7.0  # shoulder abduction
    lean: float = 3.0  # torso pitch forward
    head_yaw: float = 0.0
    jitter: tuple[float, ...] = ()


JOINTS = ("hip_r", "hip_l", "knee_r", "knee_l", "shoulder_r", "shoulder_l", "elbow_r", "elbow_l", "head")


def sample_body(rng: np.random.Generator) -> Body:
    return Body(height=float(np.clip(rng.normal(1.72, 0.08), 1.52, 1.95)), build=float(rng.uniform(0.85, 1.2)))


def sample_pose(rng: np.random.Generator, body: Body | None = None, gait: float = 1.0) -> Pose:
    """A random walking pose; `gait` scales the swing amplitudes (identity-specific)."""
    return Pose(
        body=body or Body(),
        phase=float(rng.uniform(0.0, 2.0 * np.pi)),
        leg_swing=float(gait * rng.uniform(14.0, 28.0)),
        arm_swing=float(gait * rng.uniform(10.0, 28.0)),
        arm_spread=float(rng.uniform(3.0, 12.0)),
        lean=float(rng.uniform(0.0, 6.0)),
        head_yaw=float(rng.normal(0.0, 12.0)),
        jitter=tuple(float(a) for a in rng.normal(0.0, 4.0, len(JOINTS))),
    )


@dataclass(frozen=True)
class Primitive:
    """One body segment. kind "cone": tapered elliptic cylinder from `origin` along the axis, radius
    r0 -> r1 over `length`, cross-section scaled by (sx, sy). kind "ellipsoid": centre `origin`,
    semi-axes (sx, sy, length/2) along (lateral, forward, axis); U = 0 at the proximal pole."""

    kind: str
    chart: str  # "limb" | "head" | "whole"
    parts: tuple[int, int]  # limb: (front, back); head: (left, right); whole: (part, part)
    origin: np.ndarray
    frame: np.ndarray  # [3, 3] rows = lateral, forward, axis (person frame)
    length: float
    r0: float = 1.0
    r1: float = 1.0
    sx: float = 1.0
    sy: float = 1.0


def _rot_x(deg: float) -> np.ndarray:
    # Swings a segment hanging along -y forwards (+z) by `deg`.
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, s], [0, -s, c]])


def _rot_z(deg: float, side: float) -> np.ndarray:
    # Abducts a hanging segment outwards (towards side * x) by `deg`.
    a = np.radians(deg)
    c, s = np.cos(a), side * np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _hanging_frame(rot: np.ndarray, side: float) -> np.ndarray:
    """Rows (lateral, forward, axis) of a segment at rest hanging down, rotated by `rot`."""
    return np.stack([rot @ np.array([side, 0.0, 0.0]), rot @ np.array([0.0, 0.0, 1.0]), rot @ np.array([0.0, -1.0, 0.0])])


def _side_name(side: float) -> str:
    return "l" if side == LEFT else "r"


def build_primitives(pose: Pose) -> list[Primitive]:
    """The posed mannequin as primitives in the person frame."""
    h, b = pose.body.height, pose.body.build
    jit = dict(zip(JOINTS, pose.jitter, strict=True)) if pose.jitter else {}
    # Proportions as fractions of the height (adult average).
    thigh, shin, ankle = 0.245 * h, 0.235 * h, 0.045 * h
    torso_len = 0.30 * h
    hip_y = thigh + shin + ankle
    neck_y = hip_y + torso_len
    upper_arm, forearm = 0.17 * h, 0.15 * h
    torso_hw = 0.115 * h * b
    bulk = 1.12 * b  # limbs are clothed, a little thicker than bare anatomy
    prims: list[Primitive] = []

    # Torso: from the neck (u = 0) down to the pelvis (u = 1), leaning forward a little.
    rot_t = _rot_x(-pose.lean)
    frame_t = np.stack([rot_t @ np.array([1.0, 0, 0]), rot_t @ np.array([0, 0, 1.0]), rot_t @ np.array([0, -1.0, 0])])
    neck = np.array([0.0, neck_y, 0.0])
    pelvis_len = torso_len + 0.06 * h
    prims.append(Primitive("cone", "limb", (PART["torso_front"], PART["torso_back"]), neck, frame_t, pelvis_len,
                           r0=torso_hw, r1=0.92 * torso_hw, sx=1.0, sy=0.62))
    down_t = frame_t[2]

    # Head: an ellipsoid above the neck, axis up, yawed.
    rot_h = rot_t @ _rot_y(pose.head_yaw + jit.get("head", 0.0))
    frame_h = np.stack([rot_h @ np.array([1.0, 0, 0]), rot_h @ np.array([0, 0, 1.0]), rot_h @ np.array([0, 1.0, 0])])
    head_len = 0.135 * h
    head_c = neck - down_t * (0.025 * h + head_len / 2)
    prims.append(Primitive("ellipsoid", "head", (PART["head_l"], PART["head_r"]), head_c, frame_h, head_len,
                           sx=0.045 * h, sy=0.052 * h))

    phase = pose.phase
    for side in (RIGHT, LEFT):
        s = _side_name(side)
        # Right leg forward when sin(phase) > 0; the arm on the same side swings the other way.
        swing = np.sin(phase) if side == RIGHT else -np.sin(phase)
        bend = np.sin(phase + np.pi / 3) if side == RIGHT else -np.sin(phase + np.pi / 3)

        # Leg.
        hip = np.array([side * 0.055 * h * b, hip_y, 0.0])
        rot_thigh = rot_t @ _rot_x(pose.lean + pose.leg_swing * swing + jit.get(f"hip_{s}", 0.0)) @ _rot_z(2.0, side)
        knee_deg = 4.0 + 1.4 * pose.leg_swing * max(0.0, float(bend)) + abs(jit.get(f"knee_{s}", 0.0))
        rot_shin = rot_thigh @ _rot_x(-knee_deg)
        f_thigh, f_shin = _hanging_frame(rot_thigh, side), _hanging_frame(rot_shin, side)
        ext = 0.03 * h  # segments overlap their parent so joints have no gaps
        prims.append(Primitive("cone", "limb", (PART[f"upper_leg_{s}_front"], PART[f"upper_leg_{s}_back"]),
                               hip - f_thigh[2] * ext, f_thigh, thigh + ext, r0=0.05 * h * bulk, r1=0.034 * h * bulk))
        knee = hip + f_thigh[2] * thigh
        prims.append(Primitive("cone", "limb", (PART[f"lower_leg_{s}_front"], PART[f"lower_leg_{s}_back"]),
                               knee - f_shin[2] * ext * 0.6, f_shin, shin + ext * 0.6, r0=0.033 * h * bulk,
                               r1=0.022 * h * bulk))
        ankle_p = knee + f_shin[2] * shin
        # Foot: points forward from the ankle (the shin frame rotated by 90 degrees).
        f_foot = _hanging_frame(rot_shin @ _rot_x(90.0), side)
        foot_len = 0.15 * h
        prims.append(Primitive("ellipsoid", "whole", (PART[f"foot_{s}"],) * 2,
                               ankle_p + f_foot[2] * (0.3 * foot_len) + f_shin[2] * (0.6 * ankle), f_foot, foot_len,
                               sx=0.028 * h, sy=0.024 * h))

        # Arm.
        shoulder = neck + down_t * (0.035 * h) + rot_t @ np.array([side * (torso_hw + 0.012 * h), 0.0, 0.0])
        arm_deg = -pose.arm_swing * swing + jit.get(f"shoulder_{s}", 0.0)
        rot_up = rot_t @ _rot_x(pose.lean + arm_deg) @ _rot_z(pose.arm_spread, side)
        elbow_deg = 8.0 + 0.9 * max(0.0, float(-pose.arm_swing * swing)) + abs(jit.get(f"elbow_{s}", 0.0))
        rot_fore = rot_up @ _rot_x(elbow_deg)
        f_up, f_fore = _hanging_frame(rot_up, side), _hanging_frame(rot_fore, side)
        prims.append(Primitive("cone", "limb", (PART[f"upper_arm_{s}_front"], PART[f"upper_arm_{s}_back"]),
                               shoulder - f_up[2] * ext * 0.5, f_up, upper_arm + ext * 0.5, r0=0.029 * h * bulk,
                               r1=0.022 * h * bulk))
        elbow = shoulder + f_up[2] * upper_arm
        prims.append(Primitive("cone", "limb", (PART[f"lower_arm_{s}_front"], PART[f"lower_arm_{s}_back"]),
                               elbow - f_fore[2] * ext * 0.5, f_fore, forearm + ext * 0.5, r0=0.021 * h * bulk,
                               r1=0.016 * h * bulk))
        wrist = elbow + f_fore[2] * forearm
        hand_len = 0.1 * h
        prims.append(Primitive("ellipsoid", "whole", (PART[f"hand_{s}"],) * 2, wrist + f_fore[2] * (0.45 * hand_len),
                               f_fore, hand_len, sx=0.022 * h, sy=0.014 * h))
    return prims

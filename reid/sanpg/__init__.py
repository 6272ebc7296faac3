"""SAN-PG (SPEC §7): SA-Enc + SA-Dec trained on PIT pairs with L1 reconstruction only, then run on
every reID crop to give its pseudo ground-truth texture; plus the texture metrics.

Modules: `config` (params sections train_sanpg, texture; the architecture), `data` (PIT in memory,
the held-out split, texture normalisation), `model` (build, save and load in the artifact layout of
`reid.engine.artifacts`), `train` (a `reid.engine.loop.Task`, the held-out summary), `inference`
(predictions and texture L1s), `cache` (the pseudo-texture cache of the texture stage), `pictures`.

Textures are atlases (`reid.parts`): uint8 [6T, 4T, 3] on disk, float [3, 6T, 4T] in [-1, 1] for the
network (x / 127.5 - 1, `reid.data.transforms.texture_inputs`; not the official repo's /225 typo), and
back with `to_uint8` (round((x + 1) * 127.5), clipped). Every L1 reported here is the mean absolute
difference in those [-1, 1] units over all atlas pixels and channels (1.0 = 127.5 grey levels).

Held-out split: by texture identity, not by pair — pairs whose texture file bytes are identical share
an identity (PIT renders one texture in several poses), so held-out textures are never seen in training.

Augmentation (crop, optional flip and erasing) touches the person image only; the texture target is
never augmented. Flip is off by default: a mirrored person has the mirrored atlas (left/right charts
swapped, patterns reversed), so keeping the target would teach a wrong texture.

Exact resumption is `reid.engine.loop`'s: each epoch's shuffle and augmentation are drawn from
torch's RNG right after `fit` seeds it from (seed, epoch), and weights, Adam moments and the LR
schedule come back from the checkpoint, so a resumed run ends with the uninterrupted run's weights.
"""

"""reID models (SPEC §8).

MODEL_NAMES and MODEL_INPUTS live here, free of torch, so that readers of model names (the report
stage) and the train stage's choice of caches do not pay torch's import; reid.modeling.build
re-exports MODEL_NAMES.
"""

MODEL_NAMES = ("baseline", "baseline2b", "dsa", "san", "dsa_san")
# The extra batch keys each model's TRAINING forward reads (its `inputs`): which caches it trains on.
MODEL_INPUTS: dict[str, tuple[str, ...]] = {"baseline": (), "baseline2b": (), "dsa": ("dsap",),
                                            "san": ("texture",), "dsa_san": ("dsap", "texture")}
# Feature sets the pipeline embeds and evaluates: every model, and the pretrain stage's network as it is.
PRETRAINED = "pretrained"
FEATURE_SETS = (*MODEL_NAMES, PRETRAINED)
STREAM_MODELS = ("dsa", "dsa_san")  # with a DSAG-Stream: also the fused and guide diagnostics

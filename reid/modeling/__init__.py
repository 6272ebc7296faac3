"""reID models (SPEC §8).

MODEL_NAMES lives here, free of torch, so that readers of model names (the report stage) do not
pay torch's import; reid.modeling.build re-exports it.
"""

MODEL_NAMES = ("baseline", "baseline2b", "dsa", "san", "dsa_san")

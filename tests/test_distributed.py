"""2-process gloo DDP on CPU through torchrun: training runs, ranks see disjoint identities,
weights stay in sync, and sharded feature extraction gathers back in dataset order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import TinyModel

from reid.data.torch_dataset import ReidDataset, manifest_split
from reid.data.transforms import eval_transform
from reid.engine import distributed
from reid.engine.checkpoint import load_checkpoint
from reid.engine.inference import extract_features

SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    sys.path.insert(0, {tests!r})
    from test_trainer import TinyModel, make_manifest, tiny_config
    from reid.data.torch_dataset import ReidDataset
    from reid.data.transforms import eval_transform, train_transform
    from reid.engine import distributed
    from reid.engine.inference import extract_features
    from reid.engine.trainer import train

    class Recording(ReidDataset):
        def __getitem__(self, index):
            self.seen.add(int(self.labels[index]))
            return super().__getitem__(index)

    out = Path({out!r})
    info = distributed.init_distributed(torch.device("cpu"))
    data = out / "data"
    if info.is_main:
        make_manifest(data, n_ids=12, per_id=2)
    distributed.barrier()
    from reid.data.torch_dataset import manifest_split
    manifest = manifest_split(data / "manifest.parquet")
    dataset = Recording(manifest, train_transform((16, 8)))
    dataset.seen = set()
    torch.manual_seed(0)
    model = TinyModel(num_classes=12)
    result = train(model, dataset, tiny_config(epochs=1, p=3), out / "run")
    checksum = float(sum(p.double().sum() for p in model.parameters()))
    ids = [str(i) for i in manifest["image_id"].to_pylist()]
    table = extract_features(model, ReidDataset(manifest, eval_transform((16, 8))), ids,
                             device=torch.device("cpu"), batch_size=5, flip=True)
    (out / f"rank{{info.rank}}.json").write_text(json.dumps({{
        "world": info.world_size, "seen": sorted(dataset.seen), "checksum": checksum,
        "loss": result.final_loss, "ids": table["image_id"].to_pylist(),
        "features": table["feature"].to_pylist()}}))
    distributed.cleanup()
''')


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path: Path) -> None:
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["seen"] and ranks[1]["seen"] and not set(ranks[0]["seen"]) & set(ranks[1]["seen"])
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)  # DDP kept replicas equal
    assert ranks[0]["loss"] == ranks[1]["loss"]  # logged loss is the cross-rank mean
    assert (tmp_path / "run" / "checkpoint" / "last.pt").is_file()
    assert (tmp_path / "run" / "live" / "metrics.json").is_file()
    # Sharded extraction: both ranks return the whole table in manifest order; rank 1's
    # shard (odd rows) lands where it belongs.
    assert ranks[0]["ids"] == ranks[1]["ids"] and len(ranks[0]["ids"]) == 24
    assert ranks[0]["features"] == ranks[1]["features"]
    model = TinyModel(num_classes=12)
    model.load_state_dict(load_checkpoint(tmp_path / "run" / "checkpoint" / "last.pt")["model"])
    manifest = manifest_split(tmp_path / "data" / "manifest.parquet")
    single = extract_features(model, ReidDataset(manifest, eval_transform((16, 8))), ranks[0]["ids"],
                              device=torch.device("cpu"), batch_size=7, flip=True)
    assert np.allclose(np.array(single["feature"].to_pylist()), np.array(ranks[0]["features"]), atol=1e-5)


def test_single_process_helpers_are_no_ops(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = distributed.init_distributed(torch.device("cpu"))
    assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
    x = torch.tensor([1.0, 2.0])
    assert torch.equal(distributed.all_reduce_mean(x), x)
    distributed.barrier()

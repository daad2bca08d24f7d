"""Record run() outputs on seeded CPU cases with the ORIGINAL trainer (tests/workloads/data/trainer_golden.json)."""
import json, sys, torch
from tvlars.train import run
import tvlars.train as T
print("recording with", T.__file__, file=sys.stderr)
torch.set_num_threads(1)
TIMING = ("images_per_s", "epoch_seconds", "wall_seconds", "device")
def clean(row):
    out = {k: v for k, v in row.items() if k not in TIMING}
    if "history" in out:
        out["history"] = [clean(r) for r in out["history"]]
    return out
CASES = {
 "mlp_mnist1d_tvlars": {"dataset": "mnist1d", "model": "mlp", "optimizer": "tvlars", "batch_size": 500, "epochs": 3, "lr": 4.0, "lam": 1e-3, "delay_epochs": 1, "num_threads": 1},
 "cnn_synthetic_lars": {"dataset": "synthetic", "dataset_options": {"n_train": 256, "n_test": 128, "image_size": 8}, "model": "cnn", "optimizer": "lars", "batch_size": 64, "epochs": 2, "lr": 1.0, "num_threads": 1},
 "mlp_mnist1d_lars_warmup": {"dataset": "mnist1d", "model": "mlp", "optimizer": "lars_warmup", "batch_size": 1000, "epochs": 5, "lr": 0.5, "num_threads": 1},
 "mlp_digits_lamb": {"dataset": "digits", "model": "mlp", "optimizer": "lamb", "batch_size": 256, "epochs": 2, "lr": 0.01, "num_threads": 1},
 "barlow_twins_mlp_mnist1d": {"task": "barlow_twins", "dataset": "mnist1d", "model": "mlp", "optimizer": "tvlars", "batch_size": 1000, "epochs": 2, "lr": 1.0, "projector_dims": [64, 64], "probe_epochs": 2, "num_threads": 1},
 "barlow_twins_cnn_synthetic": {"task": "barlow_twins", "dataset": "synthetic", "dataset_options": {"n_train": 256, "n_test": 128, "image_size": 8}, "model": "cnn", "optimizer": "lars", "batch_size": 128, "epochs": 2, "lr": 0.5, "projector_dims": [32], "probe_epochs": 2, "num_threads": 1},
}
out = {}
for name, cfg in CASES.items():
    rows = []
    res = run(dict(cfg), rows.append)
    out[name] = {"config": cfg, "reports": [clean(r) for r in rows], "result": clean(res)}
    print(name, res["test_acc"], file=sys.stderr)
# resumed from state: save after epoch 2 of a 4-epoch TVLARS run, continue from it
cfg = {"dataset": "mnist1d", "model": "mlp", "optimizer": "tvlars", "batch_size": 500, "epochs": 4, "lr": 4.0, "lam": 1e-2, "delay_epochs": 1, "num_threads": 1}
import io
saved = {}
def save(epoch, state):
    buf = io.BytesIO(); torch.save(state, buf); saved[epoch] = buf.getvalue()
run(dict(cfg), None, save_state=save)
state = torch.load(io.BytesIO(saved[2]), weights_only=True)
rows = []
res = run(dict(cfg), rows.append, state=state)
out["resumed_mlp_mnist1d_tvlars"] = {"config": cfg, "resume_after_epoch": 2, "reports": [clean(r) for r in rows], "result": clean(res)}
print("resumed", res["test_acc"], file=sys.stderr)
json.dump(out, open(sys.argv[1], "w"), indent=1)

"""The classifier recipes' options (models/nets.py, models/layers.py, models/train.py): each
one, in a tiny VGGSmall with random BatchNorm statistics, RSign shifts and RPReLU
parameters, exports to ONNX, converts (with the onnxruntime check) to binary ops of the
runtime and computes what PyTorch computes; the two-step schedule's switch, the optimizer's
groups (no weight decay on latent binary weights), the linear decay per step, init from a
network without the new options, and the recipe settings (--set)."""
import numpy as np
import pytest

import torch
import torch.nn as nn

import firmware_py as fp
from models import checkpoint, train as T
from models.layers import BinaryConv2d, InAct, RPReLU, set_binary_weights
from models.nets import VGGSmall
from conftest import ROOT, load_dataset
from test_convert import nodes_of, ops, randomize_bn, roundtrip

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::UserWarning")
WIDTH = (8, 16, 16, 32, 32)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """train(threads=1) sets torch's threads for the whole process: restored after each test"""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def tiny(variant, seed=0, **opts):
    m = VGGSmall(variant, 3, 10, [0.5] * 3, [0.25] * 3, width=WIDTH, **opts)
    randomize_bn(m, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (InAct, RPReLU)):
                for p in mod.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.dim() == 4 else 0.2) +
                            (0 if p.dim() == 4 else 0.25))
    return m.eval()


CASES = [  # (variant, options, binary convs, ops that must be there)
    ("xnor", {}, 4, {}),
    ("xnor", {"arch": "bireal"}, 4, {"add": 4, "concat": 2}),
    ("xnor", {"rsign": True}, 4, {}),
    ("xnor", {"arch": "bireal", "rsign": True, "rprelu": True}, 4, {"add": 4, "prelu": 4}),
    ("xnor_k", {"arch": "bireal", "rsign": True, "rprelu": True}, 4, {"xnor_scale": 4, "prelu": 4}),
    ("bwn", {"arch": "bireal"}, 0, {"add": 4}),
    ("fp", {"arch": "bireal"}, 0, {"add": 4}),
]


@pytest.mark.parametrize("variant,opts,n_bconv,must", CASES,
                         ids=["%s-%s" % (c[0], "+".join(k for k, v in c[1].items() if v) or "plain") for c in CASES])
def test_option_converts_to_binary_ops(tmp_path, variant, opts, n_bconv, must):
    model = tiny(variant, seed=len(opts), **opts)
    res = roundtrip(model, (1, 3, 16, 16), tmp_path, "torchscript", samples=3)
    o = ops(res)
    assert o.count("bconv2d") == n_bconv, o
    assert o.count("fconv2d") == (1 if n_bconv else 5) and o.count("dense") == 1, o
    for op, n in must.items():
        assert o.count(op) == n, (op, o)
    assert "unpack" not in o, o  # no binary tensor is expanded back to float
    if variant == "bwn":  # the inner convolutions' weights are +-alpha per filter (folded with BN)
        for n in nodes_of(res, "fconv2d")[1:]:
            w = res.tensors[n["params"]["weights"]]
            a = np.abs(w).reshape(w.shape[0], -1)
            np.testing.assert_allclose(a.min(1), a.max(1), rtol=1e-5)
    if variant == "xnor" and not opts:
        # the plain stack: BN folded into integer thresholds, bits out, pooled on bits
        assert [n["attrs"]["output"] for n in nodes_of(res, "bconv2d")] == ["bits"] * 3 + ["float"]
        assert o.count("affine") == 1 and o[0] == "affine", o  # only the input normalisation
    # at load, the runtime fuses every per-channel affine (RSign's shift, RPReLU's Sub/Add,
    # the input normalisation) into an elementwise pass or the packing (bitpack_affine)
    executed = [p["op"] for p in fp.load(res.path, num_threads=1).profile(np.zeros((1, 3, 16, 16), np.float32), 1)]
    assert "affine" not in executed and "prelu" not in executed, executed
    if variant == "xnor" and opts.get("rsign"):
        assert executed.count("bitpack_affine") >= 2, executed


def test_deeper_net_pools_after_every_second_block(tmp_path):
    # 6 inner convs: pools after the 1st, 3rd and 5th (4 inner convs keep their two pools)
    model = VGGSmall("xnor", 3, 10, [0.5] * 3, [0.25] * 3, width=(8, 16, 16, 32, 32, 64, 64), arch="bireal",
                     rsign=True, rprelu=True)
    assert [b.pool is not None for b in model.blocks] == [True, False, True, False, True, False]
    assert [b.pool is not None for b in tiny("xnor").blocks] == [True, False, True, False]
    randomize_bn(model, seed=3)
    res = roundtrip(model.eval(), (1, 3, 16, 16), tmp_path, "torchscript", samples=2)
    assert ops(res).count("bconv2d") == 6


def test_shift_range():
    x = torch.zeros(400, 1, 9, 9)
    x[:, 0, 4, 4] = 1  # one lit pixel in the centre
    for shift in (2, 4):
        out = T._augment(x, False, torch.Generator().manual_seed(0), shift)
        ys, xs = (out[:, 0] == 1).nonzero()[:, 1:].T
        assert len(ys) == 400  # never shifted out of a 9x9 image by +-4
        assert sorted(set((ys - 4).tolist())) == list(range(-shift, shift + 1)) == sorted(set((xs - 4).tolist()))
    assert T.recipe("cifar10", "fp", "modern")["shift"] == 2 and T.parse_sets(["shift=4"]) == {"shift": 4}
    for bad in (-1, 9):
        with pytest.raises(ValueError, match="shift must be"):
            T.recipe("cifar10", "fp", "modern", {"shift": bad})


def test_cutout_and_label_smoothing(tmp_path):
    x = torch.ones(400, 2, 12, 12)
    assert torch.equal(T._augment(x, True, torch.Generator().manual_seed(0), 2, 0),
                       T._augment(x, True, torch.Generator().manual_seed(0), 2))  # cutout 0: as before
    out = T._augment(x, False, torch.Generator().manual_seed(0), 0, 4)
    sizes = set()
    for img in out:
        assert torch.equal(img[0], img[1])  # the same square in every channel
        ys, xs = (img[0] == 0).nonzero().T
        h, w = int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1
        assert h <= 4 and w <= 4 and len(ys) == h * w  # one square, cut at the border
        sizes.add((h, w))
    assert (4, 4) in sizes and len(sizes) > 1  # whole squares inside, smaller ones at the borders
    assert T.parse_sets(["cutout=8", "label_smoothing=0.1"]) == {"cutout": 8, "label_smoothing": 0.1}
    for bad, match in (({"cutout": 17}, "cutout must be"), ({"cutout": -1}, "cutout must be"),
                       ({"label_smoothing": 1.0}, "label_smoothing must be"),
                       ({"label_smoothing": -0.1}, "label_smoothing must be")):
        with pytest.raises(ValueError, match=match):
            T.recipe("cifar10", "fp", "modern", bad)
    # the settings reach training: label smoothing changes the gradients, 0 is the default
    load_dataset("mnist")
    sets = ["width=8,16,16,32,32", "batch=32"]
    trained = {}
    for name, extra in (("default", []), ("zero", ["label_smoothing=0"]), ("ls", ["label_smoothing=0.5"]),
                        ("cutout", ["cutout=8"])):
        m, _ = T.train("mnist", "fp", 1, threads=1, quiet=True, recipe_name="modern", limit=128,
                       overrides=T.parse_sets(sets + extra), ckpt_dir=tmp_path / name)
        trained[name] = m.state_dict()["stem.0.weight"]
    assert torch.equal(trained["default"], trained["zero"])
    assert not torch.equal(trained["default"], trained["ls"])
    assert not torch.equal(trained["default"], trained["cutout"])


def test_checkpoint_from_before_the_shift_setting_is_still_finished(tmp_path):
    import shutil

    load_dataset("cifar10")
    # the first (narrow) CIFAR-10 table's fp (2-px shifts)
    shutil.copy(T.CKPT / "cifar10" / "modern" / "fp.npz", tmp_path / "fp.npz")
    # the same configuration: nothing to train (a time limit stops it at once if it were not)
    _, done = T.train("cifar10", "fp", 40, threads=1, quiet=True, recipe_name="modern", ckpt_dir=tmp_path,
                      time_limit=1e-9)
    assert done
    # another configuration is refused, naming what differs; the checkpoint is left as it was
    before = (tmp_path / "fp.npz").read_bytes()
    with pytest.raises(checkpoint.OtherConfig, match=r"settings\.shift: 2 -> 4"):
        T.train("cifar10", "fp", 40, threads=1, quiet=True, recipe_name="modern", ckpt_dir=tmp_path,
                time_limit=1e-9, overrides={"shift": 4})
    assert (tmp_path / "fp.npz").read_bytes() == before


def test_two_step_switch(tmp_path):
    model = tiny("xnor", arch="bireal", rsign=True, rprelu=True)
    conv = model.blocks[1].conv
    x = torch.randn(2, 16, 8, 8)
    set_binary_weights(model, False)  # step 1: real weights behind binary activations
    with torch.no_grad():
        y = conv(x)
        ref = nn.functional.conv2d(torch.sign(x), conv.weight, None, 1, 1)
    torch.testing.assert_close(y, ref)
    set_binary_weights(model, True)  # step 2 and export: +-alpha
    assert all(m.binary_weights == 1 for m in model.modules() if isinstance(m, BinaryConv2d))
    res = roundtrip(model, (1, 3, 16, 16), tmp_path, "torchscript")
    assert ops(res).count("bconv2d") == 4


def test_gradual_binarisation_mixes_real_and_binary_weights():
    model = tiny("xnor", arch="bireal", rsign=True, rprelu=True)
    conv = model.blocks[1].conv
    x = torch.randn(2, 16, 8, 8)
    alpha = conv.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
    w_bin = torch.where(conv.weight >= 0, 1.0, -1.0) * alpha
    set_binary_weights(model, 0.25)
    with torch.no_grad():
        y = conv(x)
    ref = nn.functional.conv2d(torch.sign(x), 0.75 * conv.weight.detach() + 0.25 * w_bin, None, 1, 1)
    torch.testing.assert_close(y, ref)
    # the gradient reaches the latent weights through both parts, in the same proportions
    # (the loss is linear in the weights here, so the mixed gradient is the mix of the two)
    grads = {}
    for t in (0.0, 0.25, 1.0):
        set_binary_weights(model, t)
        conv.weight.grad = None
        conv(x).sum().backward()
        grads[t] = conv.weight.grad.clone()
    torch.testing.assert_close(grads[0.25], 0.75 * grads[0.0] + 0.25 * grads[1.0])
    assert not torch.allclose(grads[0.0], grads[1.0])
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            set_binary_weights(model, bad)


def test_schedule_and_linear_decay():
    s = T.recipe("cifar10", "xnor", "modern")
    assert s["two_step"] and s["optimizer"] == "adam-linear"
    steps = T.schedule(s, 10)
    assert steps == [(0, 5, False), (5, 10, True)]
    lrs = [T._lr_linear(s, steps, k, 10, 4) for k in range(40)]
    assert lrs[0] == s["lr"] and lrs[20] == s["lr"]  # each step starts at the full rate ...
    assert all(a > b for a, b in zip(lrs[:19], lrs[1:20])) and 0 < lrs[39] < 0.1 * s["lr"]  # ... decays linearly
    assert T.schedule(T.recipe("cifar10", "fp", "modern"), 10) == [(0, 10, True)]  # fp has no binary step
    with pytest.raises(ValueError, match="two_step needs"):
        T.recipe("cifar10", "xnor", "xnor-net", {"two_step": True})


def test_no_weight_decay_on_latent_binary_weights():
    model = T.build_net(T.net_config("cifar10", "xnor", T.recipe("cifar10", "xnor", "modern")))
    opt = T.make_optimizer(model, {"wd": 0.05, "lr": 1e-3})
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert isinstance(opt, torch.optim.AdamW)
    assert decayed == {id(model.stem[0].weight), id(model.fc.weight)}  # the float conv and linear only
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_init_from_fp_keeps_the_new_options():
    fp = T.build_net(T.net_config("cifar10", "fp", T.recipe("cifar10", "fp", "modern")))
    xnor = T.build_net(T.net_config("cifar10", "xnor", T.recipe("cifar10", "xnor", "modern")))
    T.load_init(xnor, fp.state_dict())
    torch.testing.assert_close(xnor.blocks[2].conv.weight, fp.blocks[2].conv.weight)
    plain = T.build_net(T.net_config("cifar10", "fp", T.recipe("cifar10", "fp")))  # other shapes (no shortcut)
    T.load_init(plain, fp.state_dict())  # same parameters: a plain net has no extra ones
    other = VGGSmall("fp", 3, 10, [0] * 3, [1] * 3, width=(8, 16, 16, 32, 32))
    with pytest.raises(RuntimeError, match="another shape"):
        T.load_init(xnor, other.state_dict())


def test_settings():
    assert T.parse_sets(["two_step=false", "lr=1e-3", "width=8,16,16,32,32", "arch=plain"]) == {
        "two_step": False, "lr": 1e-3, "width": [8, 16, 16, 32, 32], "arch": "plain"}
    for bad in ("nope=1", "two_step", "rsign=maybe", "resnet:lr=1", "xnor:nope=1"):
        with pytest.raises(ValueError):
            T.parse_sets([bad])
    # a setting named with a variant is that variant's alone, whatever the order
    sets = ["xnor:cutout=0", "cutout=8", "lr=1e-3", "bwn:lr=5e-4"]
    assert T.parse_sets(sets, "xnor") == {"cutout": 0, "lr": 1e-3}
    assert T.parse_sets(sets, "bwn") == {"cutout": 8, "lr": 5e-4}
    assert T.parse_sets(sets, "fp") == T.parse_sets(sets) == {"cutout": 8, "lr": 1e-3}
    assert T.recipe("fashion-mnist", "xnor")["augment"] is False  # the Fashion-MNIST zoo's recipe is unchanged
    assert T.recipe("cifar10", "bwn")["init"] == "fp" and T.recipe("mnist", "bwn")["init"] is None


def test_a_bad_setting_is_said_without_a_traceback():
    import subprocess
    import sys

    for mod, args in (("models.train", ["--variant", "xnor", "--set", "xnor:init=resnet"]),
                      ("models.table", ["--set", "lr=abc"])):
        r = subprocess.run([sys.executable, "-m", mod, "--dataset", "mnist", *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 1 and r.stderr.startswith("error: --set") and "Traceback" not in r.stderr, r.stderr


def test_table_describes_each_recipe_in_words():
    from models.table import VARIANTS, describe

    modern = describe({v: T.recipe("cifar10", v, "modern") for v in VARIANTS})
    assert modern.startswith("bwn, xnor and xnor_k start from fp's trained weights; "
                             "bwn, xnor and xnor_k are distilled from fp; fp starts from scratch"), modern
    assert "two_step=True" in modern
    sets = ["cutout=16", "xnor:cutout=0", "xnor_k:cutout=0"]
    own = describe({v: T.recipe("cifar10", v, "modern", T.parse_sets(sets, v)) for v in VARIANTS})
    assert ("settings of fp (models/train.py) wd=0.05, optimizer=adam-linear, arch=bireal, cutout=16; "
            "settings of bwn (models/train.py) wd=0.05, optimizer=adam-linear, arch=bireal, two_step=True, cutout=16; "
            "settings of xnor and xnor_k (models/train.py) wd=0.05, optimizer=adam-linear, arch=bireal, rsign=True, "
            "rprelu=True, two_step=True") in own, own
    plain = describe({v: T.recipe("fashion-mnist", v) for v in VARIANTS})
    assert plain == ("xnor and xnor_k start from fp's trained weights; xnor is distilled from fp; "
                     "xnor trains without the random shifts/flips; fp and bwn start from scratch"), plain


def test_table_command_says_how_to_make_it_again():
    from models import table

    def cmd(*argv):
        return table.command(table.parser().parse_args(["--dataset", "cifar10", *argv]), 60)

    assert cmd() == "python -m models.table --dataset cifar10 --epochs 60 --seed 0"
    assert cmd("--recipe", "modern", "--set", "cutout=16", "--set", "xnor:cutout=0", "--precision", "bf16",
               "--ckpt-dir", "models/.ckpt/cifar10/deep-reg", "--threads", "2") == (
        "python -m models.table --dataset cifar10 --epochs 60 --seed 0 --recipe modern --set cutout=16 "
        "--set xnor:cutout=0 --precision bf16 --ckpt-dir models/.ckpt/cifar10/deep-reg")


def test_table_trains_each_variant_with_its_own_settings(tmp_path):
    from models import checkpoint, table

    load_dataset("mnist")
    # xnor needs fp (its init and teacher): fp is trained first, with the settings without a variant
    assert table.main(["--dataset", "mnist", "--recipe", "modern", "--epochs", "2", "--variants", "xnor",
                       "--train-only", "--threads", "1", "--limit", "128", "--ckpt-dir", str(tmp_path),
                       "--set", "width=8,16,16,32,32", "--set", "batch=32", "--set", "xnor:cutout=0",
                       "--set", "cutout=8"]) == 0
    fp, xnor = (checkpoint.load(tmp_path / ("%s.npz" % v))["config"] for v in ("fp", "xnor"))
    assert fp["epochs"] == xnor["epochs"] == 2 and fp["settings"]["width"] == xnor["settings"]["width"]
    assert fp["settings"]["cutout"] == 8 and xnor["settings"]["cutout"] == 0


def test_a_variant_can_have_its_own_epochs_and_sources(tmp_path):
    from models import checkpoint, table

    for bad in ("xnor:init=resnet", "xnor:distill=naive", "fp:init=xnor", "xnor:init=xnor", "epochs=-1"):
        with pytest.raises(ValueError):
            v = bad.partition(":")[0] if ":" in bad else "xnor"
            T.recipe("mnist", v, "modern", T.parse_sets([bad], v))
    assert T.parse_sets(["xnor_k:init=xnor", "xnor_k:distill=none"], "xnor_k") == {"init": "xnor", "distill": None}

    def args(*sets):
        return table.parser().parse_args(["--dataset", "mnist", "--recipe", "modern"] +
                                         [x for kv in sets for x in ("--set", kv)])

    # sources first, whatever the order asked for; a loop of sources is refused
    assert table.training_order(args("xnor_k:init=xnor"), ["xnor_k", "naive"]) == ["fp", "xnor", "xnor_k"]
    with pytest.raises(ValueError, match="loop"):
        table.training_order(args("xnor:init=xnor_k", "xnor_k:init=xnor"), ["xnor"])
    recipes = {v: T.recipe("mnist", v, "modern", T.parse_sets(["xnor_k:epochs=1"], v)) for v in table.VARIANTS}
    assert table.epochs_text(recipes, 2) == "epochs per trained variant: fp 2, bwn 2, xnor 2, xnor_k 1"
    assert "epochs=" not in table.describe(recipes)

    load_dataset("mnist")
    # xnor_k starts from the trained xnor (which starts from fp) and trains 1 epoch of its own
    assert table.main(["--dataset", "mnist", "--recipe", "modern", "--epochs", "2", "--variants", "xnor_k",
                       "--train-only", "--threads", "1", "--limit", "128", "--ckpt-dir", str(tmp_path),
                       "--set", "width=8,16,16,32,32", "--set", "batch=32", "--set", "xnor_k:init=xnor",
                       "--set", "xnor_k:epochs=1", "--set", "xnor_k:two_step=false"]) == 0
    fp, xnor, xnor_k = (checkpoint.load(tmp_path / ("%s.npz" % v)) for v in ("fp", "xnor", "xnor_k"))
    assert fp["epoch"] == xnor["epoch"] == 2 and xnor_k["epoch"] == xnor_k["config"]["epochs"] == 1
    assert xnor_k["config"]["settings"]["init"] == "xnor" and xnor_k["config"]["init_epochs"] == 2
    assert xnor_k["config"]["teacher"]["path"] == "fp.npz"


def test_bf16_resumes_in_fp32_and_a_finished_checkpoint_keeps_weights_only(tmp_path):
    from models import checkpoint
    from models.precision import autocast

    cpu = torch.device("cpu")
    conv, x = nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8)
    with autocast("bf16", cpu):
        assert conv(x).dtype == torch.bfloat16
    with autocast("fp32", cpu):
        assert conv(x).dtype == torch.float32
    with pytest.raises(ValueError, match="precision 'fp16'"):
        autocast("fp16", cpu)
    load_dataset("mnist")
    kw = dict(threads=1, quiet=True, recipe_name="modern", limit=512,
              overrides=T.parse_sets(["width=8,16,16,32,32", "batch=32"]))
    with pytest.raises(ValueError, match="precision"):
        T.train("mnist", "fp", 1, precision="half", ckpt_dir=tmp_path / "x", **kw)
    # a bf16 epoch, interrupted by the time limit, then resumed to the end in fp32
    _, done = T.train("mnist", "fp", 2, precision="bf16", ckpt_dir=tmp_path / "a", time_limit=0.001, **kw)
    ck = checkpoint.load(tmp_path / "a" / "fp.npz")
    assert not done and ck["epoch"] == 1
    assert all(v.dtype in (torch.float32, torch.int64) for v in ck["model"].values())  # checkpoints stay float32
    T.train("mnist", "fp", 1, precision="fp32", ckpt_dir=tmp_path / "b", **kw)  # the same epoch in fp32
    bf, f32 = ck["model"], checkpoint.load(tmp_path / "b" / "fp.npz")["model"]
    assert not torch.equal(bf["stem.0.weight"], f32["stem.0.weight"])  # bf16 arithmetic took part ...
    torch.testing.assert_close(bf["stem.0.weight"], f32["stem.0.weight"], atol=0.05, rtol=0)  # ... nearby
    size1 = (tmp_path / "a" / "fp.npz").stat().st_size
    model, done = T.train("mnist", "fp", 2, precision="fp32", ckpt_dir=tmp_path / "a", **kw)
    end = checkpoint.load(tmp_path / "a" / "fp.npz")
    assert done and end["epoch"] == 2
    # the finished checkpoint holds the weights without the optimizer's state, and is still "done"
    assert end["opt"] == {} and (tmp_path / "a" / "fp.npz").stat().st_size < 0.5 * size1
    again, done = T.train("mnist", "fp", 2, precision="fp32", ckpt_dir=tmp_path / "a", **kw)
    assert done and all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                          model.state_dict().values()))


def test_bench_precision_reports_both_precisions(capsys):
    import json

    from models import bench_precision
    bench_precision.main(["--threads", "1", "--rounds", "1", "--cifar-width", "8,16,16,32,32", "--cifar-batch",
                          "4", "--imgsz", "64", "--det-batch", "2"])
    r = json.loads(capsys.readouterr().out)
    assert [row["model"] for row in r["rows"]] == ["cifar10/fp 8,16,16,32,32", "cifar10/xnor 8,16,16,32,32",
                                                   "detector/fp", "detector/binary"]
    for row in r["rows"]:
        assert row["fp32_ms"] > 0 and row["bf16_ms"] > 0
        assert row["speedup"] == pytest.approx(row["fp32_ms"] / row["bf16_ms"], rel=0.1)

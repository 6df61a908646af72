"""Importing state dicts of the pclucas14/pixel-cnn-pp port.

The state dicts are built here with the port's key names and shapes (read from its public
source); weight norm is applied with PyTorch's own ``torch._weight_norm`` (what the port's
``weight_norm`` computes), independently of the importer's code.
"""

import pytest
import torch

from cpixelcnn import import_pixelcnnpp, load_run
from cpixelcnn.cli import main
from cpixelcnn.pixelcnnpp_port import PortImportError, port_state_dict_shapes

ARCHS = [(1, 8, 3, 3, True), (2, 6, 5, 1, False), (3, 4, 10, 3, True)]


def _port_state_dict(nr_resnet, nr_filters, nr_mix, channels, nin_wn, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = port_state_dict_shapes(nr_resnet, nr_filters, nr_mix, channels, nin_weight_norm=nin_wn)
    return {
        k: torch.randn(s, generator=gen) * (0.3 if k.endswith("bias") else 1.0) + (1.0 if k.endswith("weight_g") else 0.0) for k, s in shapes.items()
    }


def test_port_key_names_and_shapes_spot_check():
    shapes = port_state_dict_shapes(nr_resnet=2, nr_filters=8, nr_logistic_mix=5, in_channels=3)
    assert shapes["u_init.conv.weight_v"] == (8, 4, 2, 3)
    assert shapes["ul_init.0.conv.weight_v"] == (8, 4, 1, 3)
    assert shapes["ul_init.1.conv.weight_v"] == (8, 4, 2, 1)
    assert shapes["up_layers.2.ul_stream.1.nin_skip.lin_a.weight_v"] == (8, 16)
    assert shapes["down_layers.1.ul_stream.2.nin_skip.lin_a.weight_v"] == (8, 32)
    assert shapes["down_layers.2.u_stream.2.conv_out.conv.weight_v"] == (16, 16, 2, 3)
    assert shapes["upsize_ul_stream.1.deconv.weight_g"] == (8, 1, 1, 1)
    assert shapes["upsize_u_stream.0.deconv.weight_v"] == (8, 8, 2, 3)
    assert shapes["nin_out.lin_a.weight_v"] == (50, 8)
    assert "down_layers.0.u_stream.2.conv_out.conv.bias" not in shapes  # down stages: n, n+1, n+1
    # 3 init convs + up (3·n·(2+2) convs + 3·n nin) + down ((3n+2)·4 convs + (3n+2)·2 nin) + 8 resize + out
    n = 2
    layers = 3 + 3 * n * 5 + (3 * n + 2) * 6 + 8 + 1
    assert len(shapes) == 3 * layers


def _our_effective_weight(module):
    return module.weight.detach()


@pytest.mark.parametrize("arch", ARCHS)
def test_every_tensor_lands_where_it_belongs(arch):
    sd = _port_state_dict(*arch)
    model = import_pixelcnnpp(sd)
    assert model.num_classes == 0
    assert (model.nr_resnet, model.nr_filters, model.nr_logistic_mix, model.in_channels) == arch[:4]
    ours = dict(model.named_modules())
    pairs = {
        "u_init.conv": "u_init.conv",
        "ul_init.1.conv": "ul_init_left.conv",
        f"up_layers.1.ul_stream.{arch[0] - 1}.nin_skip.lin_a": f"up_stages.1.ul_stream.{arch[0] - 1}.nin_skip.conv",
        "down_layers.2.u_stream.0.conv_out.conv": "down_stages.2.u_stream.0.conv_out.conv",
        "upsize_u_stream.1.deconv": "upsize_u.1.deconv",
        "downsize_ul_stream.0.conv": "downsize_ul.0.conv",
        "nin_out.lin_a": "nin_out.conv",
    }
    for port_name, our_name in pairs.items():
        if f"{port_name}.weight" in sd:
            expected = sd[f"{port_name}.weight"]
        else:
            expected = torch._weight_norm(sd[f"{port_name}.weight_v"], sd[f"{port_name}.weight_g"], 0)
        got = _our_effective_weight(ours[our_name])
        assert torch.allclose(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-6), port_name
        assert torch.equal(ours[our_name].bias.detach(), sd[f"{port_name}.bias"])


def test_weight_norm_choice_does_not_change_outputs_and_prefixes_are_accepted():
    sd = _port_state_dict(*ARCHS[0])
    x = torch.randint(0, 256, (2, 3, 8, 8)) / 127.5 - 1
    a = import_pixelcnnpp(sd)(x, None)
    b = import_pixelcnnpp(sd, weight_norm=False)(x, None)
    c = import_pixelcnnpp({"state_dict": {f"module.{k}": v for k, v in sd.items()}})(x, None)
    renamed = {
        k.replace(".weight_g", ".parametrizations.weight.original0").replace(".weight_v", ".parametrizations.weight.original1"): v
        for k, v in sd.items()
    }
    d = import_pixelcnnpp(renamed)(x, None)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    assert torch.equal(a, c) and torch.equal(a, d)


def test_file_round_trip_and_cli(tmp_path):
    sd = _port_state_dict(*ARCHS[2])
    path = tmp_path / "port.pth"
    torch.save(sd, path)
    model = import_pixelcnnpp(path, nr_resnet=3)
    out = tmp_path / "run"
    assert main(["import", "--from", "pixelcnnpp", str(path), "--out", str(out), "--nr-filters", "4"]) == 0
    loaded, config = load_run(out)
    assert config["imported_from"] == "pixelcnnpp"
    x = torch.randint(0, 256, (1, 3, 8, 8)) / 127.5 - 1
    assert torch.equal(loaded(x, None), model(x, None))


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda sd: sd.pop("up_layers.1.u_stream.0.conv_out.conv.weight_g"), "missing key 'up_layers.1.u_stream.0.conv_out.conv.weight_g'"),
        (lambda sd: sd.pop("nin_out.lin_a.bias"), "missing key 'nin_out.lin_a.bias'"),
        (lambda sd: sd.__setitem__("extra_layer.weight", torch.zeros(1)), "unexpected key 'extra_layer.weight'"),
        (
            lambda sd: sd.__setitem__("down_layers.0.ul_stream.0.nin_skip.lin_a.weight_v", torch.zeros(8, 7)),
            "shape mismatch at 'down_layers.0.ul_stream.0.nin_skip.lin_a.weight_v'",
        ),
        (lambda sd: sd.__setitem__("u_init.conv.weight_v", torch.zeros(8, 3, 2, 3)), "image channels"),
    ],
)
def test_bad_state_dicts_name_the_first_offending_key(mutate, message):
    sd = _port_state_dict(*ARCHS[0])
    mutate(sd)
    with pytest.raises(PortImportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_pixelcnnpp(sd)


def test_not_a_state_dict(tmp_path):
    with pytest.raises(PortImportError, match="not a state dict"):
        import_pixelcnnpp({"epoch": 3})
    with pytest.raises(PortImportError, match="not a state dict"):
        import_pixelcnnpp([1, 2])
    garbage = tmp_path / "notes.pth"
    garbage.write_text("hello")
    with pytest.raises(PortImportError, match="not a loadable PyTorch state dict"):
        import_pixelcnnpp(garbage)
    with pytest.raises(FileNotFoundError):
        import_pixelcnnpp(tmp_path / "missing.pth")
    with pytest.raises(PortImportError, match="nr_resnet=2 was given"):
        import_pixelcnnpp(_port_state_dict(*ARCHS[0]), nr_resnet=2)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    path = tmp_path / "evil.pth"
    torch.save({"u_init.conv.weight_v": Evil()}, path)
    with pytest.raises(PortImportError, match="not a loadable"):
        import_pixelcnnpp(path)


def test_cli_import_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    assert main(["import", "--from", "pixelcnnpp", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing key 'u_init.conv.weight_v'" in err
    assert not (tmp_path / "run").exists()


def test_commands_work_on_an_imported_run(tmp_path, capsys):
    path = tmp_path / "port.pth"
    torch.save(_port_state_dict(1, 4, 2, 3, True), path)
    run = tmp_path / "run"
    assert main(["import", "--from", "pixelcnnpp", str(path), "--out", str(run)]) == 0
    assert main(["sample", "--checkpoint", str(run), "--n", "2", "--out", str(tmp_path / "s.png"), "--image-size", "6"]) == 0
    assert (tmp_path / "s.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--data", "demo", "--json"]) == 0
    result = __import__("json").loads(capsys.readouterr().out)
    assert result["bpd"] > 0 and result["accuracy"] is None

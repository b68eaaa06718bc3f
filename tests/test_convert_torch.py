"""The PyTorch converter: converted networks compute what the reference's compute (eval mode:
running statistics, no dropout), the command line writes a workdir that restores, and files
that do not fit the options are refused with the fix."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import onnxruntime
import pytest

torch = pytest.importorskip(
    "torch",
    reason="the converter's tests need PyTorch; install the optional extra: "
    "pip install -e '.[torch]'",
)

from i2i_jax import config as config_lib  # noqa: E402
from i2i_jax import (  # noqa: E402
    convert_torch,
    export,
    exported_generator,
    models,
    parallel,
    tasks,
    torch_reference,
)
from i2i_jax.checkpointing import Checkpointer  # noqa: E402
from i2i_jax.config import workdir as workdir_config  # noqa: E402
from i2i_jax.errors import OutputExistsError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_images(channels: int, size: int, seed: int = 0) -> np.ndarray:
    """A batch of 2 NCHW images in [-1, 1]."""
    return np.random.default_rng(seed).uniform(-1, 1, (2, channels, size, size)).astype(np.float32)


def torch_output(net, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(images)).numpy()


def flax_output(module, variables, images: np.ndarray) -> np.ndarray:
    """`module` in eval mode on NCHW `images`, returned as NCHW."""
    variables = {k: v for k, v in variables.items() if v}  # No batch_stats without batch norm.
    outputs = module.apply(variables, jnp.asarray(images.transpose(0, 2, 3, 1)), train=False)
    return np.asarray(outputs).transpose(0, 3, 1, 2)


def template(module, channels: int, size: int) -> dict:
    shapes = jax.eval_shape(
        lambda: module.init(
            jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels)), train=False
        )
    )
    return {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}


def state_dict(net) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in net.state_dict().items()}


def config_with(**options) -> ml_collections.ConfigDict:
    config = config_lib.pix2pix()
    config.update(options)
    return config


@pytest.mark.parametrize(
    "netG,norm,no_dropout,size",
    [
        ("unet_256", "batch", False, 256),
        ("unet_128", "batch", False, 128),
        ("resnet_9blocks", "batch", True, 32),
        ("resnet_6blocks", "batch", True, 32),
        ("unet_128", "instance", False, 128),
        ("resnet_6blocks", "instance", False, 32),  # Dropout shifts the blocks' second conv.
        ("unet_256", "none", False, 256),
        ("resnet_9blocks", "none", True, 32),
    ],
)
def test_converted_generator_computes_what_torch_computes(netG, norm, no_dropout, size):
    net = torch_reference.randomize(
        torch_reference.define_G(netG, 3, 2, 4, norm, not no_dropout), seed=1
    )
    module = models.build_generator(
        config_with(netG=netG, norm=norm, no_dropout=no_dropout, ngf=4, output_nc=2)
    )
    variables = convert_torch.convert(
        state_dict(net),
        "generator",
        dict(netG=netG, norm=norm, no_dropout=no_dropout),
        template(module, 3, size),
        "G.pth",
    )
    images = random_images(3, size)
    expected = torch_output(net, images)
    assert np.mean(np.abs(expected) < 0.95) > 0.5  # Not saturated: every layer matters.
    np.testing.assert_allclose(flax_output(module, variables, images), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "netD,n_layers_D,norm,size",
    [
        ("basic", 3, "batch", 64),
        ("basic", 3, "instance", 64),
        ("n_layers", 2, "none", 32),
        ("pixel", 3, "batch", 16),
    ],
)
def test_converted_discriminator_computes_what_torch_computes(netD, n_layers_D, norm, size):
    net = torch_reference.randomize(torch_reference.define_D(netD, 6, 8, norm, n_layers_D), seed=2)
    module = models.build_discriminator(
        config_with(netD=netD, n_layers_D=n_layers_D, norm=norm, ndf=8)
    )
    variables = convert_torch.convert(
        state_dict(net),
        "discriminator",
        dict(netD=netD, norm=norm, n_layers_D=n_layers_D),
        template(module, 6, size),
        "D.pth",
    )
    images = random_images(6, size)
    np.testing.assert_allclose(
        flax_output(module, variables, images), torch_output(net, images), rtol=0, atol=1e-4
    )


def test_data_parallel_prefix_and_stale_buffers_are_accepted(tmp_path):
    """DataParallel's `module.` prefix goes; `num_batches_tracked` and the running statistics of
    old instance-norm files are ignored."""
    net = torch_reference.randomize(
        torch_reference.define_G("resnet_2blocks", 3, 3, 4, "instance"), seed=3
    )
    saved = {f"module.{k}": v for k, v in net.state_dict().items()}
    for key in ("model.2", "model.10.conv_block.2"):  # InstanceNorm2d(track_running_stats=True)
        saved[f"module.{key}.running_mean"] = torch.zeros(16 if "block" in key else 4)
        saved[f"module.{key}.running_var"] = torch.ones(16 if "block" in key else 4)
        saved[f"module.{key}.num_batches_tracked"] = torch.tensor(5)
    torch.save(saved, tmp_path / "G.pth")
    loaded = convert_torch.load_state_dict(str(tmp_path / "G.pth"))
    assert "model.1.weight" in loaded
    module = models.build_generator(config_with(netG="resnet_2blocks", norm="instance", ngf=4))
    variables = convert_torch.convert(
        loaded,
        "generator",
        dict(netG="resnet_2blocks", norm="instance", no_dropout=True),
        template(module, 3, 16),
        "G.pth",
    )
    images = random_images(3, 16)
    np.testing.assert_allclose(
        flax_output(module, variables, images), torch_output(net, images), rtol=0, atol=1e-4
    )


def conversion_error(net, role: str, options: dict, module, channels: int, size: int) -> str:
    with pytest.raises(convert_torch.ConversionError) as error:
        convert_torch.convert(
            state_dict(net),
            role,
            options,
            template(module, channels, size),
            "/models/latest_net_G.pth",
        )
    return str(error.value)


def test_a_file_that_does_not_fit_names_its_keys_and_the_fix():
    unet_128 = torch_reference.define_G("unet_128", ngf=4, norm="batch")
    options = dict(netG="unet_256", norm="batch", no_dropout=False)
    message = conversion_error(
        unet_128, "generator", options, models.build_generator(config_with(ngf=4)), 3, 256
    )
    assert "/models/latest_net_G.pth does not fit" in message
    assert "missing keys: model.model.1.model.3.model.3" in message
    assert "unexpected keys: model.model.1" in message
    assert "--netG=unet_128" in message

    message = conversion_error(
        unet_128,
        "generator",
        dict(options, netG="unet_128", norm="instance"),
        models.build_generator(config_with(netG="unet_128", ngf=4, norm="instance")),
        3,
        128,
    )
    assert "--norm=batch" in message

    with_dropout = torch_reference.define_G(
        "resnet_9blocks", ngf=4, norm="instance", use_dropout=True
    )
    message = conversion_error(
        with_dropout,
        "generator",
        dict(netG="resnet_9blocks", norm="instance", no_dropout=True),
        models.build_generator(
            config_with(netG="resnet_9blocks", ngf=4, norm="instance", no_dropout=True)
        ),
        3,
        32,
    )
    assert "--nono_dropout" in message

    wide = torch_reference.define_D("basic", ndf=16)
    message = conversion_error(
        wide,
        "discriminator",
        dict(netD="basic", norm="batch", n_layers_D=3),
        models.build_discriminator(config_with(ndf=8)),
        6,
        64,
    )
    assert "model.0.weight (16, 6, 4, 4) (expected (8, 6, 4, 4))" in message
    assert "--ngf/--ndf" in message

    message = conversion_error(
        wide, "generator", options, models.build_generator(config_with(ngf=4)), 3, 256
    )
    assert "are those of a discriminator (--netD=basic --norm=batch" in message


def test_files_that_are_no_state_dicts_are_refused(tmp_path):
    with pytest.raises(convert_torch.ConversionError, match="no such file"):
        convert_torch.load_state_dict(str(tmp_path / "absent.pth"))
    net = torch_reference.define_D("basic", ndf=4)
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, tmp_path / "wrapped.pth")
    with pytest.raises(convert_torch.ConversionError, match=r"not a state dict.*'state_dict'"):
        convert_torch.load_state_dict(str(tmp_path / "wrapped.pth"))
    torch.save(net, tmp_path / "module.pth")  # A pickled module: weights_only refuses it.
    with pytest.raises(convert_torch.ConversionError, match=r"module\.pth: torch\.load"):
        convert_torch.load_state_dict(str(tmp_path / "module.pth"))


def test_an_existing_workdir_is_refused(tmp_path):
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    convert_torch.check_output(str(workdir))  # Empty: fine.
    (workdir / "config.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="holds something other than a converted workdir"):
        convert_torch.build_workdir(config_with(), {"G": "unused.pth"}, str(workdir))
    assert os.listdir(workdir) == ["config.json"]


def run_converter(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "i2i_jax.convert_torch", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def restore(workdir):
    """The workdir's config and its checkpoint, restored as a training run would."""
    config = workdir_config.load(str(workdir))
    task = tasks.build_task(config, steps_per_epoch=1)
    initial = parallel.init_replicated(task.init_state, config.seed, parallel.make_mesh())
    checkpointer = Checkpointer(str(workdir), 1, 1)
    state = checkpointer.restore_latest(initial)
    checkpointer.close()
    return config, task, initial, jax.device_get(state)


@pytest.mark.slow
def test_command_line_writes_a_pix2pix_workdir_that_restores(tmp_path):
    generator = torch_reference.randomize(
        torch_reference.define_G("unet_256", ngf=4, use_dropout=True), seed=4
    )
    discriminator = torch_reference.randomize(torch_reference.define_D("basic", ndf=4), seed=5)
    torch.save(generator.state_dict(), tmp_path / "latest_net_G.pth")
    torch.save(discriminator.state_dict(), tmp_path / "latest_net_D.pth")
    workdir = tmp_path / "facades"
    result = run_converter(
        f"--checkpoint={tmp_path / 'latest_net_G.pth'}",
        f"--discriminator={tmp_path / 'latest_net_D.pth'}",
        "--netG=unet_256",
        "--norm=batch",
        "--ngf=4",
        "--ndf=4",
        f"--output={workdir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "G: converted from" in result.stderr and "D: converted from" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["facades", "latest_net_D.pth", "latest_net_G.pth"]

    config, _, initial, state = restore(workdir)
    assert (config.model, config.netG, config.norm, config.ngf, config.crop_size) == (
        "pix2pix",
        "unet_256",
        "batch",
        4,
        256,
    )
    assert int(state.step) == 0
    images = random_images(3, 256)
    np.testing.assert_allclose(
        flax_output(
            models.build_generator(config),
            {"params": state.nets["G"].params, "batch_stats": state.nets["G"].batch_stats},
            images,
        ),
        torch_output(generator, images),
        rtol=0,
        atol=1e-4,
    )
    pairs = random_images(6, 64)
    np.testing.assert_allclose(
        flax_output(
            models.build_discriminator(config),
            {"params": state.nets["D"].params, "batch_stats": state.nets["D"].batch_stats},
            pairs,
        ),
        torch_output(discriminator, pairs),
        rtol=0,
        atol=1e-4,
    )
    jax.tree.map(
        np.testing.assert_array_equal,
        state.nets["G"].opt_state,  # Fresh optimizer.
        jax.device_get(initial.nets["G"].opt_state),
    )

    # The reference's model served: the exported artifact computes what torch does.
    export.export_generators(str(workdir), str(tmp_path / "served"), mode="eval")
    served = exported_generator.ExportedGenerator(str(tmp_path / "served"))
    np.testing.assert_allclose(
        served(images.transpose(0, 2, 3, 1), np.arange(2)).transpose(0, 3, 1, 2),
        torch_output(generator, images),
        rtol=0,
        atol=1e-4,
    )
    # And as ONNX, run by onnxruntime.
    export.export_generators(str(workdir), str(tmp_path / "onnx"), mode="eval", extra_format="onnx")
    session = onnxruntime.InferenceSession(
        str(tmp_path / "onnx" / "AtoB.onnx"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(
        session.run(None, {"images": images.transpose(0, 2, 3, 1)})[0].transpose(0, 3, 1, 2),
        torch_output(generator, images),
        rtol=0,
        atol=1e-4,
    )


@pytest.mark.slow
def test_command_line_writes_a_cyclegan_workdir_from_two_generators(tmp_path):
    """CycleGAN's defaults (resnet_9blocks, instance norm, no dropout); G_B maps the output
    domain's channels back to the input's; the discriminators keep their initialisation."""
    g_a = torch_reference.randomize(
        torch_reference.define_G("resnet_9blocks", 3, 1, 4, "instance"), seed=6
    )
    g_b = torch_reference.randomize(
        torch_reference.define_G("resnet_9blocks", 1, 3, 4, "instance"), seed=7
    )
    torch.save(g_a.state_dict(), tmp_path / "latest_net_G_A.pth")
    torch.save(g_b.state_dict(), tmp_path / "latest_net_G_B.pth")
    workdir = tmp_path / "horse2zebra"
    result = run_converter(
        f"--checkpoint={tmp_path / 'latest_net_G_A.pth'}",
        f"--checkpoint_BtoA={tmp_path / 'latest_net_G_B.pth'}",
        "--ngf=4",
        "--output_nc=1",
        f"--output={workdir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "D_A: initialised" in result.stderr and "D_B: initialised" in result.stderr

    config, task, initial, state = restore(workdir)
    assert (config.model, config.netG, config.norm, config.no_dropout, config.output_nc) == (
        "cycle_gan",
        "resnet_9blocks",
        "instance",
        True,
        1,
    )
    for name, net, module, channels in (
        ("G_A", g_a, task.generator, 3),
        ("G_B", g_b, task.generator_b, 1),
    ):
        images = random_images(channels, 32)
        np.testing.assert_allclose(
            flax_output(module, {"params": state.nets[name].params}, images),
            torch_output(net, images),
            rtol=0,
            atol=1e-4,
            err_msg=name,
        )
    jax.tree.map(
        np.testing.assert_array_equal,
        state.nets["D_B"].params,
        jax.device_get(initial.nets["D_B"].params),
    )


@pytest.mark.slow
def test_command_line_error_names_the_file_and_the_fix_and_writes_nothing(tmp_path):
    torch.save(torch_reference.define_G("unet_128", ngf=4).state_dict(), tmp_path / "G.pth")
    result = run_converter(
        f"--checkpoint={tmp_path / 'G.pth'}",
        "--netG=unet_256",
        "--ngf=4",
        f"--output={tmp_path / 'workdir'}",
    )
    assert result.returncode == 1
    assert (
        f"i2i_jax: error: {tmp_path / 'G.pth'} does not fit the generator of --netG=unet_256"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert "missing keys" in result.stderr and "Its keys fit --netG=unet_128" in result.stderr
    assert os.listdir(tmp_path) == ["G.pth"]

"""The command-line tools as a user runs them: configs, overrides and the benchmark's JSON."""

import json
import os
import subprocess
import sys

import pytest

from i2i_jax.config import KEYS, cyclegan, flatten, pix2pix

from helpers import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_facades_config_is_the_papers_setup():
    config = load_config("pix2pix_facades")
    assert (config.netG, config.netD, config.norm, config.gan_mode) == (
        "unet_256",
        "basic",
        "batch",
        "vanilla",
    )
    assert (config.batch_size, config.load_size, config.crop_size) == (1, 286, 256)
    assert (config.lambda_L1, config.lr, config.beta1) == (100.0, 2e-4, 0.5)
    assert (config.n_epochs, config.n_epochs_decay, config.direction) == (100, 100, "BtoA")
    assert (config.data.source, config.data.name) == ("tfds", "facades")


def test_horse2zebra_config_is_the_papers_setup():
    config = load_config("cyclegan_horse2zebra")
    assert (config.model, config.netG, config.netD, config.norm, config.gan_mode) == (
        "cycle_gan",
        "resnet_9blocks",
        "basic",
        "instance",
        "lsgan",
    )
    assert (config.lambda_A, config.lambda_B, config.lambda_identity, config.pool_size) == (
        10.0,
        10.0,
        0.5,
        50,
    )
    assert (config.batch_size, config.load_size, config.crop_size, config.no_dropout) == (
        1,
        286,
        256,
        True,
    )
    assert (config.data.source, config.data.name) == ("tfds", "horse2zebra")


def test_every_config_has_exactly_its_tasks_keys():
    """Config files change values, never the set of keys (overrides of unknown keys fail)."""
    defaults = {"pix2pix": pix2pix(), "cycle_gan": cyclegan()}
    for name in (
        "pix2pix_facades",
        "pix2pix_synthetic",
        "cyclegan_horse2zebra",
        "cyclegan_synthetic",
    ):
        config = load_config(name)
        assert set(config.keys()) == set(defaults[config.model].keys()), name
    assert {
        "seed",
        "batch_size",
        "num_train_steps",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
    } <= set(pix2pix().keys()) & set(cyclegan().keys())


@pytest.mark.slow
@pytest.mark.parametrize(
    "config_file,netG", [("pix2pix_synthetic", "unet_32"), ("cyclegan_synthetic", "resnet_2blocks")]
)
def test_benchmark_prints_one_json_line_with_the_figures(config_file, netG):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "i2i_jax.benchmark",
            f"--config=configs/{config_file}.py",
            f"--config.netG={netG}",
            "--config.crop_size=32",
            "--config.ngf=8",
            "--config.ndf=8",
            "--config.batch_size=2",
            "--steps=2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "step_time_ms",
        "images_per_sec",
        "compile_s",
        "peak_rss_mb",
        "flops_per_step",
        "devices",
    ):
        assert figures[key] > 0, key
    assert figures["batch_size"] == 2


def run_main(*args, workdir="/nonexistent/never_written"):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "i2i_jax.main",
            "--config=configs/pix2pix_synthetic.py",
            f"--workdir={workdir}",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args,last_line",
    [
        (
            ["--config.crop_sise=64"],
            "Fix: did you mean --config.crop_size? `python -m i2i_jax.main --help` lists the keys.",
        ),
        (
            ["--config.data.sorce=folder"],
            "Fix: did you mean --config.data.source? `python -m "
            "i2i_jax.main --help` lists the keys.",
        ),
        (
            ["--config.crop_size=100"],
            "Fix: --config.load_size=100 or more, or --config.crop_size=72 or less",
        ),
        (["--config.data.source=folder", "--config.data.dataroot=/no/such/dataset"], None),
    ],
)
@pytest.mark.slow
def test_a_user_error_exits_1_with_its_fix_on_the_last_line_and_no_traceback(
    args, last_line, tmp_path
):
    result = run_main(*args, workdir=str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    if last_line:
        assert lines[-1] == last_line
    else:
        assert "/no/such/dataset" in lines[-1] and "data.dataroot" in lines[-1]


@pytest.mark.slow
def test_help_lists_the_tasks_and_every_config_key_with_its_meaning():
    result = run_main("--help")  # absl ends --help with status 1.
    assert "Tasks (config.model): pix2pix" in result.stdout
    for key in KEYS:
        assert f"  {key.name} = " in result.stdout and key.meaning in result.stdout, key.name


def test_every_config_key_has_a_meaning_for_help():
    keys = set(flatten(pix2pix().to_dict())) | set(flatten(cyclegan().to_dict()))
    assert keys == {key.name for key in KEYS} and all(key.meaning for key in KEYS)


@pytest.mark.slow
def test_the_benchmark_and_the_config_checks_do_not_load_tensorflow():
    """TensorFlow in the benchmark's JAX worker adds 0.45 GB to every row's peak RSS."""
    code = (
        "import sys; from i2i_jax import benchmark, compare_torch, compare_workers, config; "
        "[config.validate(c, 1) for c in (config.pix2pix(), config.cyclegan())]; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "tool,args,expected",
    [
        ("export", ["--workdir={tmp}", "--output={tmp}/model"], "is not an i2i_jax workdir"),
        ("evaluate", ["--workdir={tmp}"], "is not an i2i_jax workdir"),
        (
            "translate",
            # An input there is (translate checks its outputs before it loads the model).
            ["--model={tmp}", "--input=README.md", "--output={tmp}/out"],
            "--model must be a directory written by python -m i2i_jax.export",
        ),
        (
            "translate",
            ["--model={tmp}", "--input={tmp}", "--output={tmp}/out", "--fit=stretch"],
            "argument --fit: invalid choice: 'stretch'",
        ),
        (
            "convert_torch",
            ["--checkpoint={tmp}/latest_net_G.pth", "--output={tmp}/workdir"],
            "latest_net_G.pth: no such file",
        ),
        (
            "benchmark",
            ["--config=configs/pix2pix_synthetic.py", "--config.norm=batchnorm"],
            "config.norm='batchnorm': must be one of ['batch', 'instance', 'none'].\n"
            "Fix: --config.norm=batch",
        ),
        ("benchmark", ["--rows=no such row", "--compare_torch"], "--rows=no such row matches none"),
        (
            "main",
            ["--config=configs/pix2pix_synthetic.py", "--workdir={tmp}", "stray"],
            "unexpected arguments: ['stray']",
        ),
    ],
)
@pytest.mark.slow
def test_every_tool_reports_user_errors_in_one_message(tool, args, expected, tmp_path):
    """Status 1, the message (fix last) after `i2i_jax: error:`, and no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", f"i2i_jax.{tool}", *[a.format(tmp=tmp_path) for a in args]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert expected in result.stderr
    if tool != "main":  # absl reports a stray argument with the usage line, as for any flag.
        message = result.stderr[result.stderr.index("i2i_jax: error: ") :]
        assert expected in message


@pytest.mark.slow
@pytest.mark.parametrize(
    "row",
    [
        {"kind": "train", "model": "pix2pix", "overrides": {"netG": "unet_32", "ngf": 8, "ndf": 8}},
        {"kind": "generate", "model": "cycle_gan", "overrides": {"netG": "resnet_2blocks"}},
    ],
    ids=["pix2pix train", "resnet inference"],
)
def test_the_comparisons_jax_worker_runs_where_tensorflow_is_absent(row, tmp_path):
    """A GPU machine set up for the comparison may have jax and torch but no TensorFlow."""
    blocked = tmp_path / "blocked"
    for package in ("tensorflow", "tensorflow_datasets"):
        (blocked / package).mkdir(parents=True)
        (blocked / package / "__init__.py").write_text(
            f"raise ImportError('{package} is not installed here')\n"
        )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), REPO])}
    absent = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, cwd=REPO)
    assert absent.returncode != 0, "the test's stand-in for a missing TensorFlow does not work"

    row = {"name": "tiny", "size": 32, "batch": 1, **row}
    result = subprocess.run(
        [sys.executable, "-m", "i2i_jax.compare_workers", "jax", json.dumps(row), "cpu"],
        input="run 2\nrss\nquit\n",
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ready, run, peaks = [json.loads(line) for line in result.stdout.splitlines()]
    assert ready["flops"] > 0 and len(run["times"]) == 2 and all(t > 0 for t in run["times"])
    assert peaks["peak_rss_mb"] > 100 and peaks["peak_device_mb"] is None

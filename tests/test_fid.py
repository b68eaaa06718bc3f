"""FID and KID as papers compute them: i2i_jax's Inception features equal pytorch-fid's own
network's (random weights, no download) on real photos, FID equals pytorch-fid's own formula
and a direct scipy computation, KID a hand computation; a missing weights file names the fix."""

import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from i2i_jax import fid, fid_inception
from i2i_jax.errors import NotFoundError

torch = pytest.importorskip("torch", reason="needs the optional extra: pip install -e '.[torch]'")


def import_pytorch_fid():
    """pytorch-fid's modules. The package index's torchvision is built against CUDA PyTorch:
    beside the CPU build its compiled ops do not load, and importing it then fails on two
    fake-op registrations that name them; defining those two schemas first lets it import
    (its models are plain Python)."""
    if importlib.util.find_spec("torchvision") is None:  # Not imported yet: see below.
        pytest.skip("needs the optional extra: pip install -e '.[torch]'")
    if not hasattr(import_pytorch_fid, "library"):
        try:
            library = torch.library.Library("torchvision", "DEF")
            library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            library.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
            import_pytorch_fid.library = library  # Kept alive: dropping it undefines them.
        except RuntimeError:  # Defined already: a torchvision whose ops load.
            pass
    from pytorch_fid import fid_score, inception

    return fid_score, inception


def real_photos() -> np.ndarray:
    """Crops of a real photograph (Grace Hopper, matplotlib's sample data) of three sizes, as
    uint8 RGB: smaller, equal to and larger than the network's 299 px."""
    cbook = pytest.importorskip("matplotlib.cbook", reason="needs matplotlib (the test extra)")
    photo = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    crops = [photo[10:138, 40:168], photo[200:456, 100:356], photo[60:380, 150:470]]
    return [np.ascontiguousarray(c) for c in crops]


def randomized_fid_inception(inception_module, monkeypatch):
    """pytorch-fid's InceptionV3 (block 3, 2048-d) built by its own code with random weights in
    place of the download, and the state dict it loaded. Convolutions get He-scaled normal
    weights and batch norms random statistics, so that activations keep their scale over the
    network's depth and every parameter matters."""
    generator = torch.Generator().manual_seed(0)

    def random_state_dict(url, **kwargs):
        del url, kwargs
        model = inception_module._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        model.Mixed_5b = inception_module.FIDInceptionA(192, pool_features=32)
        model.Mixed_5c = inception_module.FIDInceptionA(256, pool_features=64)
        model.Mixed_5d = inception_module.FIDInceptionA(288, pool_features=64)
        model.Mixed_6b = inception_module.FIDInceptionC(768, channels_7x7=128)
        model.Mixed_6c = inception_module.FIDInceptionC(768, channels_7x7=160)
        model.Mixed_6d = inception_module.FIDInceptionC(768, channels_7x7=160)
        model.Mixed_6e = inception_module.FIDInceptionC(768, channels_7x7=192)
        model.Mixed_7b = inception_module.FIDInceptionE_1(1280)
        model.Mixed_7c = inception_module.FIDInceptionE_2(2048)
        state = {}
        for key, value in model.state_dict().items():
            if key.endswith("conv.weight"):
                fan_in = value[0].numel()
                value = torch.randn(value.shape, generator=generator) * (2.0 / fan_in) ** 0.5
            elif key.endswith("bn.weight"):
                value = 0.5 + torch.rand(value.shape, generator=generator)
            elif key.endswith(("bn.bias", "bn.running_mean")):
                value = 0.1 * torch.randn(value.shape, generator=generator)
            elif key.endswith("bn.running_var"):
                value = 0.5 + torch.rand(value.shape, generator=generator)
            state[key] = value
        random_state_dict.state = state
        return state

    monkeypatch.setattr(inception_module, "load_state_dict_from_url", random_state_dict)
    network = inception_module.InceptionV3([3]).eval()
    return network, random_state_dict.state


def test_the_features_are_pytorch_fids_on_real_photos(monkeypatch, tmp_path):
    _, inception_module = import_pytorch_fid()
    network, state_dict = randomized_fid_inception(inception_module, monkeypatch)
    torch.save(state_dict, tmp_path / fid_inception.WEIGHTS_FILE)
    weights = fid_inception.load_weights(str(tmp_path / fid_inception.WEIGHTS_FILE))
    cached = [f for f in os.listdir(tmp_path) if f.endswith(".npz")]
    assert len(cached) == 1  # Converted once; the next load reads the .npz.
    assert fid_inception.load_weights(str(tmp_path / cached[0])).keys() == weights.keys()

    for photo in real_photos():
        with torch.no_grad():  # pytorch-fid's input: [0, 1], NCHW.
            as_tensor = torch.from_numpy(photo.transpose(2, 0, 1)[None].astype(np.float32) / 255)
            expected = network(as_tensor)[0][:, :, 0, 0].numpy()
        ours = np.asarray(fid_inception.features(weights, photo[None]))
        assert ours.shape == expected.shape == (1, fid_inception.FEATURES)
        assert np.abs(expected).max() > 1e-2  # Features of a working network, not zeros.
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_fid_is_pytorch_fids_and_scipys():
    fid_score, _ = import_pytorch_fid()
    sqrtm = pytest.importorskip("scipy.linalg").sqrtm
    rng = np.random.default_rng(0)
    one = rng.normal(size=(300, 64)) @ rng.normal(size=(64, 64))
    two = rng.normal(0.3, 1.2, size=(250, 64)) @ rng.normal(size=(64, 64))
    mu_1, mu_2 = one.mean(0), two.mean(0)
    sigma_1, sigma_2 = np.cov(one, rowvar=False), np.cov(two, rowvar=False)
    direct = (
        np.sum((mu_1 - mu_2) ** 2)
        + np.trace(sigma_1)
        + np.trace(sigma_2)
        - 2 * np.trace(sqrtm(sigma_1 @ sigma_2)).real
    )
    ours = fid.frechet_distance(one, two)
    assert ours == pytest.approx(direct, rel=1e-6)
    assert ours == pytest.approx(
        fid_score.calculate_frechet_distance(mu_1, sigma_1, mu_2, sigma_2), rel=1e-6
    )
    assert fid.frechet_distance(one, one) == pytest.approx(0.0, abs=1e-6 * ours)


def test_kid_is_the_unbiased_mmd_of_the_cubic_kernel():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.5, 1.0, size=(12, 5))

    def k(a, b):
        return (a @ b / 5 + 1) ** 3

    n = len(x)
    by_hand = (
        sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        + sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        - 2 * sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / n**2
    )
    mean, spread = fid.kernel_inception_distance(x, y, subsets=3, subset_size=100)
    assert mean == pytest.approx(by_hand, rel=1e-10)  # A subset of all 12 is the whole set.
    assert spread == pytest.approx(0.0, abs=1e-12)
    mean, spread = fid.kernel_inception_distance(x, y, subsets=50, subset_size=6)
    assert spread > 0 and abs(mean - by_hand) < 3 * spread


def test_a_missing_weights_file_names_it_where_to_get_it_and_the_fix(tmp_path):
    with pytest.raises(NotFoundError) as error:
        fid_inception.load_weights(str(tmp_path / "nowhere.pth"))
    message = str(error.value)
    assert fid_inception.WEIGHTS_FILE in message and fid_inception.WEIGHTS_URL in message
    assert message.splitlines()[-1].startswith("Fix: download")


@pytest.mark.slow
def test_training_and_the_evaluate_command_score_as_pytorch_fid_does_on_the_images(
    monkeypatch, tmp_path
):
    """FID and KID at every evaluation, the best step recorded, and the evaluate command's FID
    equal to pytorch-fid's network and formula run on the PNG files it wrote."""
    from i2i_jax import evaluate, train

    from tiny_configs import tiny_pix2pix_config

    _, inception_module = import_pytorch_fid()
    network, state_dict = randomized_fid_inception(inception_module, monkeypatch)
    weights_file = str(tmp_path / fid_inception.WEIGHTS_FILE)
    torch.save(state_dict, weights_file)

    config = tiny_pix2pix_config()
    config.eval_mode = "eval"
    config.fid_weights = weights_file
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "eval_metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [0, 4, 8]
    assert all(r["fid"] > 0 and "kid" in r for r in records)
    with open(os.path.join(workdir, "best_fid.json")) as f:
        best = json.load(f)
    assert best["step"] == min(records[1:], key=lambda r: r["fid"])["step"]

    output = tmp_path / "results"
    summary = evaluate.evaluate_workdir(workdir, output=str(output))
    assert summary["averages"]["fid"] == pytest.approx(records[-1]["fid"], rel=1e-6)
    assert summary["averages"]["kid"] == pytest.approx(records[-1]["kid"], rel=1e-6)

    def pytorch_fid_features(panel):  # As pytorch-fid reads a folder: PNG -> [0, 1] -> network.
        files = sorted((output / "images").glob(f"*_{panel}.png"))
        batch = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
        with torch.no_grad():
            tensor = torch.from_numpy(batch.transpose(0, 3, 1, 2).astype(np.float32) / 255)
            return network(tensor)[0][:, :, 0, 0].numpy().astype(np.float64)

    fakes, reals = pytorch_fid_features("fake_B"), pytorch_fid_features("real_B")
    assert summary["averages"]["fid"] == pytest.approx(fid.frechet_distance(fakes, reals), rel=1e-4)

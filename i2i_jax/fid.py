"""FID and KID between two sets of Inception features (`fid_inception.features`).

- FID (Heusel et al. 2017): |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), with S the
  features' covariances (unbiased, as numpy's `cov` and pytorch-fid). The trace of the square
  root is that of the symmetric A S2 A with A = S1^1/2, from eigenvalues in float64: the same
  number as pytorch-fid's `scipy.linalg.sqrtm(S1 @ S2)`, without its complex round-off.
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over random subsets (as torch-fidelity and the paper).
"""

import numpy as np

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def frechet_distance(features_1: np.ndarray, features_2: np.ndarray) -> float:
    mu_1, mu_2 = np.mean(features_1, axis=0), np.mean(features_2, axis=0)
    sigma_1 = np.cov(np.asarray(features_1, np.float64), rowvar=False)
    sigma_2 = np.cov(np.asarray(features_2, np.float64), rowvar=False)
    root_1 = _psd_sqrt(sigma_1)
    middle = root_1 @ sigma_2 @ root_1
    trace_root = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)))
    difference = np.asarray(mu_1, np.float64) - mu_2
    return float(difference @ difference + np.trace(sigma_1) + np.trace(sigma_2) - 2 * trace_root)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def kernel_inception_distance(
    features_1: np.ndarray,
    features_2: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """KID's mean and standard deviation over `subsets` random subsets of `subset_size` (at
    most the smaller set's size) drawn without replacement from each set."""
    size = min(subset_size, len(features_1), len(features_2))
    if size < 2:
        raise ValueError(f"KID needs at least 2 features in each set, not {size}")
    rng = np.random.default_rng(seed)
    x_all, y_all = np.asarray(features_1, np.float64), np.asarray(features_2, np.float64)
    values = [
        _mmd_squared(
            x_all[rng.choice(len(x_all), size, replace=False)],
            y_all[rng.choice(len(y_all), size, replace=False)],
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _mmd_squared(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size sets under the cubic polynomial kernel."""
    n, d = len(x), x.shape[1]
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within - 2 * k_xy.mean())

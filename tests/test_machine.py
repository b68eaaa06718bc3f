"""The machine's float32 peak: FLOPs per cycle from the CPU's vendor, family and flags, as the
vendors' optimisation manuals give them, and the model named in what the benchmark prints."""

import pytest

from i2i_jax import machine


def cpuinfo(vendor: str, family: int, name: str, flags: str) -> str:
    """Two cores of /proc/cpuinfo, as Linux writes it (the first core's fields count)."""
    core = (
        f"processor\t: {{index}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\n"
        f"model\t\t: 17\nmodel name\t: {name}\ncpu MHz\t\t: 2600.000\nflags\t\t: {flags}\n"
    )
    return "\n".join(core.format(index=i) for i in range(2))


# (vendor, family, name, flags, float32 FLOPs per cycle per core)
CPUS = [
    # Zen 4: AVX-512 executed as two 256-bit halves on 2 FMA pipes: 2 x 8 x 2.
    ("AuthenticAMD", 25, "AMD EPYC 9654", "sse avx2 fma avx512f avx512bw", 32),
    # Zen 3: same family, no AVX-512; 2 x 256-bit FMA: 2 x 8 x 2.
    ("AuthenticAMD", 25, "AMD EPYC 7763", "sse avx2 fma", 32),
    # Zen 5: 512-bit FMA pipes: 2 x 16 x 2.
    ("AuthenticAMD", 26, "AMD EPYC 9755", "sse avx2 fma avx512f", 64),
    # Intel Xeon with two AVX-512 FMA units: 2 x 16 x 2.
    ("GenuineIntel", 6, "Intel(R) Xeon(R) Platinum 8480+", "sse avx2 fma avx512f", 64),
    ("GenuineIntel", 6, "Intel(R) Core(TM) i7-4770", "sse avx2 fma", 32),
    ("GenuineIntel", 6, "an old CPU", "sse sse2", 16),
]


@pytest.mark.parametrize(("vendor", "family", "name", "flags", "per_cycle"), CPUS)
def test_flops_per_cycle_follow_the_cpu_and_not_only_its_flags(
    vendor, family, name, flags, per_cycle
):
    cpu = machine.cpu_description(cpuinfo(vendor, family, name, flags))
    assert (cpu["vendor"], cpu["family"], cpu["model_name"]) == (vendor, family, name)
    assert machine.float32_flops_per_cycle(cpu["vendor"], cpu["family"], cpu["flags"])[0] == (
        per_cycle
    )


def test_the_peak_names_this_machines_cpu_and_multiplies_out():
    peak, how = machine.peak_gflops()
    with open("/proc/cpuinfo") as f:
        cpu = machine.cpu_description(f.read())
    assert how.startswith(f"{cpu['model_name']} (family {cpu['family']}): ")
    cores, ghz, per_cycle = how.split(": ", 1)[1].split(" x ")[:3]
    assert peak == pytest.approx(
        int(cores.split()[0]) * float(ghz.split()[0]) * int(per_cycle.split()[0]), rel=1e-2
    )

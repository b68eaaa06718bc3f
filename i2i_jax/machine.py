"""What the benchmark reads about this machine: its usable cores, its float32 peak and how busy
its CPUs are (from /proc, where there is one)."""

import os


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def float32_flops_per_cycle(vendor: str, family: int, flags: set[str]) -> tuple[int, str]:
    """float32 FLOPs one core retires per cycle at best, and why: two FMA units, each as wide as
    the widest vector the CPU executes in one pass, an FMA counting 2 FLOPs. AMD's Zen 4 (family
    25) runs AVX-512 on 256-bit units, each instruction in two halves, so it peaks as AVX2 does;
    Zen 5 (family 26) servers and desktops have full 512-bit units. Zen 3 is family 25 too,
    without AVX-512."""
    if "avx512f" in flags:
        if vendor == "AuthenticAMD" and family == 25:
            return 2 * 8 * 2, "AVX-512 on 256-bit units (AMD Zen 4): 2 FMA units x 8 lanes x 2"
        return 2 * 16 * 2, "AVX-512: 2 FMA units x 16 float32 lanes x 2"
    if {"avx2", "fma"} <= flags:
        return 2 * 8 * 2, "AVX2+FMA: 2 FMA units x 8 float32 lanes x 2"
    return 2 * 4 * 2, "SSE: 2 units x 4 float32 lanes x 2"


def cpu_description(cpuinfo: str) -> dict:
    """The first core's vendor, family, model name, flags and clock from /proc/cpuinfo's text."""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return {
        "vendor": fields.get("vendor_id", ""),
        "family": int(fields.get("cpu family", "0") or 0),
        "model_name": fields.get("model name", "unknown CPU"),
        "flags": set(fields.get("flags", "").split()),
        "mhz": float(fields.get("cpu MHz", "0") or 0),
    }


def peak_gflops() -> tuple[float, str]:
    """float32 peak of this process's cores and how it was computed: cores x clock x FLOPs per
    cycle per core, the clock being the highest the kernel reports."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = cpu_description(f.read())
    except OSError:
        cpu = cpu_description("")
    mhz = cpu["mhz"]
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            mhz = int(f.read()) / 1000
    except OSError:
        pass
    per_cycle, why = float32_flops_per_cycle(cpu["vendor"], cpu["family"], cpu["flags"])
    cores = usable_cores()
    peak = cores * mhz / 1000 * per_cycle
    return peak, (
        f"{cpu['model_name']} (family {cpu['family']}): {cores} cores x {mhz / 1000:.2f} GHz "
        f"x {per_cycle} FLOPs/cycle ({why})"
    )


def busy_jiffies() -> int:
    """CPU time all processes have spent, from /proc/stat (0 where there is none)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle


def process_jiffies(pid: int) -> int:
    """CPU time (user + system) of one process, all its threads."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])

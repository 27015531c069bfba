"""Wheels for a lent GPU machine, fetched here before its time starts counting: it runs Python 3.12 on
x86-64, reaches no network, and already holds torch, transformers, numpy, safetensors, accelerate and
huggingface_hub; these are what bench.gpu_verify and bench.parallel_verify import beyond them (the
portal's own dependencies), at this venv's versions.

Usage, here: python -m bench.gpu_wheels [DIR] (default .whl, which .git/info/exclude should name); then
carry DIR to the machine and begin its command with
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site DIR/*.whl
  export PYTHONPATH=/tmp/site
"""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# The lent machine's own packages, as its image held them in 2026-11 (the device tool's list of it): the
# wheels are what the portal needs beyond these. Its versions of them stand; one missing is an ImportError
# there that costs a run.
ON_THE_DEVICE = frozenset(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
    certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cycler cython einops
    filelock flatbuffers fonttools fsspec grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna iniconfig jinja2 joblib kiwisolver lxml markdown markdown-it-py markupsafe matplotlib mdurl
    ml-dtypes mpmath msgpack multidict networkx ninja numpy packaging pandas pillow pip pluggy prometheus-client
    propcache protobuf psutil pyarrow pygments pyparsing pytest python-dateutil pyyaml regex requests rich
    safetensors scipy setuptools shellingham six sympy tabulate tokenizers torch tqdm transformers triton typer
    typing-extensions urllib3 werkzeug wheel wrapt xxhash yarl zipp""".split()  # noqa: SIM905 (a list to read)
)
# Where the wheels go: Python 3.12 on Linux, x86-64.
DEVICE_ENVIRONMENT = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux"}
DEVICE_ENVIRONMENT |= {"platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}


def needed(distribution: str = "weightgate", extra: str = "worker") -> list[str]:
    """The distributions `distribution[extra]` needs there, transitively (extras too), that the device lacks."""
    wanted, visited, pending = set(), set(), [(distribution, extra)]
    while pending:
        name, wanted_extra = pending.pop()
        key = canonicalize_name(name)
        if (key, wanted_extra) in visited or key in ON_THE_DEVICE:
            continue  # the device's own version serves, and what it needs is there too
        visited.add((key, wanted_extra))
        if name != distribution:
            wanted.add(name)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(DEVICE_ENVIRONMENT | {"extra": wanted_extra}):
                pending += [(requirement.name, named) for named in ("", *requirement.extras)]
    return sorted(wanted, key=str.lower)


PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35, 39)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
]


def download_command(requirement: str, directory: Path) -> list[str]:
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    return [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.12", "--implementation", "cp", *platforms, "--dest", str(directory), requirement,
    ]  # fmt: skip


def main(argv=None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    directory = Path(arguments[0] if arguments else ".whl")
    directory.mkdir(exist_ok=True)
    for name in needed():
        subprocess.run(download_command(f"{name}=={importlib.metadata.version(name)}", directory), check=True)
    wheels = sorted(directory.glob("*.whl"))
    megabytes = sum(path.stat().st_size for path in wheels) / 2**20
    print(f"{len(wheels)} wheels, {megabytes:.1f} MiB, in {directory} (a run carries at most 64 MiB)")


if __name__ == "__main__":
    main()

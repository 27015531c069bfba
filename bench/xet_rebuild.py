"""A file uploaded by Xet rebuilt from its xorbs by a worker, side by side in one run with storing the same
bytes straight from a local file, on local storage (the embedded default) and on S3 (SeaweedFS here):

  floor        `storage.upload` of the file itself, hashed on the way: what storing the bytes once costs
               (an LFS upload through the portal does this)
  weightgate   `xet.rebuild` as `xet.stage` runs it: the xorbs fetched a step ahead by a side thread,
               their chunks decompressed, each part hashed by another side thread while the next is made,
               PARTS_IN_FLIGHT parts stored at once
  one thread   the same rebuild with the xorbs fetched and the parts hashed by the rebuilding thread itself
               (the code before 2026-11-29 did so)

The file is the largest shard of bench.verify's bf16 LLaMA (no block repeated); its xorbs are made here as
hf_xet makes them for weights: chunks of 64 KiB (hf_xet's mean), each byte-grouped and LZ4-compressed,
xorbs cut below 64 MiB. Every arm writes a fresh key after `sync` (no earlier arm's writes still going to
disk), on a warm page cache for the source file and the local xorbs; the best of the rounds counts, arms in
turns. Usage: python -m bench.xet_rebuild [--gigabytes 1] [--rounds 3] [--apart]

`--apart` runs SeaweedFS on the last core and the rebuild on the others, as if S3 were another machine
(bench/results/xet-rebuild-apart.md); Linux only.
"""

import argparse
import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.verify import generate, generated_once, publish_results
from tests.support.servers import start_seaweedfs, stop_process, wait_for_bucket
from tests.support.xet import xorb_chunk

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("floor", "weightgate", "one thread")
CHUNK = 64 * 1024
XORB_BELOW = 60 * 1024 * 1024


def stored_as_xorbs(storage, data: bytes):
    """Store `data` as xorbs of CHUNK chunks; (xorb hash -> key, the file as its terms)."""
    from distribution import xet_formats

    keys, terms, xorb, count, size = {}, [], bytearray(), 0, 0

    def cut() -> None:
        nonlocal xorb, count, size
        name = hashlib.sha256(xorb).hexdigest()  # any distinct name: the rebuild looks xorbs up by it
        keys[name] = f"bench/xorbs/{name}"
        storage.put_bytes(keys[name], bytes(xorb))
        terms.append(xet_formats.Term(name, 0, count, size))
        xorb, count, size = bytearray(), 0, 0

    for at in range(0, len(data), CHUNK):
        plain = data[at : at + CHUNK]
        xorb += xorb_chunk(plain, xet_formats.COMPRESSION_BG4_LZ4)
        count, size = count + 1, size + len(plain)
        if len(xorb) >= XORB_BELOW:
            cut()
    if xorb:
        cut()
    return keys, xet_formats.ShardFile("", hashlib.sha256(data).hexdigest(), tuple(terms))


def run_backend(source: Path, rounds: int) -> dict:
    """In a child process whose environment names the storage: every arm's best seconds."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    from distribution import xet
    from distribution.storage import Digesting, DigestingAside, Transfer, get_storage

    storage = get_storage()
    data = source.read_bytes()
    keys, file = stored_as_xorbs(storage, data)
    xorb_bytes = sum(storage.stored_object(key).size for key in keys.values())

    def floor(key: str) -> str:
        digesting = Digesting()
        with Transfer(xet.PARTS_IN_FLIGHT) as transfer, source.open("rb") as handle:
            storage.upload(key, handle, len(data), transfer, digest=digesting)
        return digesting.result().sha256

    def rebuilt(key: str, aside: bool) -> str:
        with DigestingAside() if aside else contextlib.nullcontext(Digesting()) as digesting:
            xet.rebuild(storage, key, keys, file, digesting, depth=xet.XORBS_AHEAD if aside else 0)
        return digesting.result().sha256

    runs = {"floor": floor, "weightgate": lambda key: rebuilt(key, True), "one thread": lambda key: rebuilt(key, False)}
    best: dict[str, float] = {}
    for round_number in range(rounds):
        for arm in ARMS if round_number % 2 == 0 else reversed(ARMS):
            key = f"bench/out/{arm.replace(' ', '-')}-{round_number}"
            os.sync()
            started = time.perf_counter()
            sha256 = runs[arm](key)
            seconds = time.perf_counter() - started
            assert sha256 == file.sha256, f"{arm} stored other bytes"
            storage.delete(key)
            best[arm] = min(best.get(arm, seconds), seconds)
            print(f"  {storage.name} {arm}: {seconds:.2f} s", file=sys.stderr, flush=True)
    return {"best": best, "size": len(data), "xorb_bytes": xorb_bytes, "xorbs": len(keys)}


def measured(backend: str, source: Path, rounds: int, scratch: Path, env: dict, cores: set[int] | None) -> dict:
    command = [sys.executable, "-m", "bench.xet_rebuild", "--child", str(source), "--rounds", str(rounds)]
    env = {**env, "STORAGE_BACKEND": backend, "WEIGHTGATE_VAR_DIR": str(scratch / backend)}
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    output = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, cwd=ROOT, env=env, preexec_fn=pin)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.xet_rebuild")
    parser.add_argument(
        "--gigabytes", type=float, default=1.0, help="the checkpoint's size (its largest shard is rebuilt)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--apart", action="store_true", help="SeaweedFS on the last core, the rebuild on the others")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_backend(args.child, args.rounds)))
        return
    directory = ROOT / "var" / "bench" / "publish" / f"hub-llama-{args.gigabytes:g}-unique"
    generated_once(directory, args.gigabytes, lambda folder, size: generate(folder, size, unique=True))
    source = max(directory.glob("*.safetensors"), key=lambda path: path.stat().st_size)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "WEIGHTGATE_REQUIRE"))}
    results, cores = {}, None
    if args.apart:
        everything = sorted(os.sched_getaffinity(0))
        cores, server_core = set(everything[:-1]), everything[-1]
    with tempfile.TemporaryDirectory(dir=directory.parent) as scratch:
        scratch = Path(scratch)
        if not args.apart:
            results["local"] = measured("local", source, args.rounds, scratch, env, cores)
        (scratch / "seaweedfs").mkdir()
        # every arm's writes stay in SeaweedFS's volumes (a delete frees nothing until they are vacuumed)
        volumes = int(len(ARMS) * args.rounds * source.stat().st_size / 1e9) + 4
        weed, s3 = start_seaweedfs(scratch / "seaweedfs", volume_mb=1024, volumes=volumes)
        try:
            if args.apart:  # every thread of the server, on its own core
                subprocess.run(
                    ["taskset", "-a", "-p", "-c", str(server_core), str(weed.pid)], check=True, capture_output=True
                )
            wait_for_bucket(weed, s3, scratch / "seaweedfs")
            results["s3"] = measured("s3", source, args.rounds, scratch, {**env, **s3.env()}, cores)
        finally:
            stop_process(weed)
    first = next(iter(results.values()))
    lines = [
        f"# A file uploaded by Xet rebuilt from its xorbs: {first['size'] / 1e9:.2f} GB "
        f"({first['xorbs']} xorbs, {first['xorb_bytes'] / 1e9:.2f} GB stored)",
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; best of {args.rounds} "
        "rounds per arm, arms in turns; S3 is SeaweedFS on the same machine"
        + (f", on core {server_core} alone, the rebuild on cores {sorted(cores)}" if args.apart else ""),
        "",
        "| storage | arm | seconds | MB/s | x the floor's time |",
        "| --- | --- | --- | --- | --- |",
    ]
    for backend, result in results.items():
        best = result["best"]
        for arm in ARMS:
            lines.append(
                f"| {backend} | {arm} | {best[arm]:.2f} | {result['size'] / best[arm] / 1e6:.0f} "
                f"| {best[arm] / best['floor']:.2f} |"
            )
    lines.append("")
    for backend, result in results.items():
        best = result["best"]
        lines.append(
            f"{backend}: weightgate = {best['weightgate'] / best['floor']:.2f}x the floor's time, "
            f"{best['one thread'] / best['weightgate']:.2f}x faster than one thread"
        )
    publish_results("xet-rebuild-apart.md" if args.apart else "xet-rebuild.md", lines)


if __name__ == "__main__":
    main()

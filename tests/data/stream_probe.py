"""Run a domain stream in its own process and print what it yielded (used by the stream tests).

usage: python stream_probe.py MANIFEST OUT.json [--workers N] [--take K] [--state-in F] [--state-out F]
Under `accelerate launch` each rank writes OUT.json with its rank appended.
"""

import argparse
import json
from pathlib import Path

from distrec.data.loader import StreamLoader
from distrec.data.manifest import load_manifest
from distrec.data.stream import StreamSpec
from distrec.distributed.env import rank_and_world


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("manifest")
    p.add_argument("out")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--take", type=int, default=None)
    p.add_argument("--state-in")
    p.add_argument("--state-out")
    p.add_argument("--distributed", action="store_true")
    args = p.parse_args()
    if args.distributed:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    rank, world = rank_and_world()
    spec = StreamSpec(
        batch_size=args.batch, max_history=20, seed=7, num_workers=args.workers, shuffle_shards=2
    )
    loader = StreamLoader(load_manifest(args.manifest), spec, rank=rank, world_size=world)
    if args.state_in:
        loader.load_state_dict(json.loads(Path(args.state_in).read_text()))
    batches = []
    for batch in loader:
        batches.append(
            {
                "users": batch["users"][batch["valid"]].tolist(),
                "inputs": batch["inputs"][batch["valid"]].tolist(),
            }
        )
        if args.take is not None and len(batches) == args.take:
            break
    if args.state_out:
        Path(args.state_out).write_text(json.dumps(loader.state_dict()))
    out = args.out if world == 1 else args.out.replace(".json", f".{rank}.json")
    Path(out).write_text(
        json.dumps({"rank": rank, "world": world, "batches": batches, "length": len(loader)})
    )
    if args.distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

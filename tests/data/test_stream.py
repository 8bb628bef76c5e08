import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from distrec.data.loader import MixtureLoader, StreamLoader
from distrec.data.manifest import load_manifest
from distrec.data.stream import CorruptShardError, StreamSpec
from tests.conftest import ROOT, python

PROBE = Path(__file__).with_name("stream_probe.py")


def flat(lists) -> list[int]:
    return list(itertools.chain.from_iterable(lists))


def users(batch) -> list[int]:
    return batch["users"][batch["valid"]].tolist()


def spec(**kw) -> StreamSpec:
    base = dict(batch_size=16, max_history=20, seed=7, num_workers=0, shuffle_shards=2)
    return StreamSpec(**(base | kw))


def test_epoch_sees_every_user_once_and_epochs_reshuffle(synth_dir):
    loader = StreamLoader(load_manifest(synth_dir / "tiny"), spec())
    first = [users(b) for b in loader]
    second = [users(b) for b in loader]
    assert sorted(flat(first)) == list(range(300))
    assert sorted(flat(second)) == list(range(300)) and first != second


def test_batches_are_next_item_shifted_training_prefixes(synth_dir):
    from distrec.data.collate import collate_sequences

    batch = collate_sequences(
        [{"index": 0, "items": [5, 6, 7, 8]}, {"index": 1, "items": [9, 3]}], 10
    )
    assert batch["inputs"].tolist() == [[5, 6, 7], [9, 0, 0]]
    assert batch["targets"].tolist() == [[6, 7, 8], [3, 0, 0]]


def test_ranks_split_users_exactly_once_with_equal_batch_counts(synth_dir):
    m = load_manifest(synth_dir / "tiny")
    per_rank = [
        [users(b) for b in StreamLoader(m, spec(num_workers=2), rank=r, world_size=2)]
        for r in range(2)
    ]
    assert len(per_rank[0]) == len(per_rank[1])
    assert sorted(flat(per_rank[0] + per_rank[1])) == list(range(300))


def _probe(*args: str) -> dict:
    subprocess.run([python(), str(PROBE), *args], check=True, cwd=ROOT)
    return json.loads(Path(args[1]).read_text())


def test_resume_in_a_new_process_continues_exactly(tmp_path, synth_dir):
    manifest = str(synth_dir / "tiny" / "manifest.json")
    full = _probe(manifest, str(tmp_path / "full.json"), "--workers", "2")["batches"]
    state = tmp_path / "state.json"
    head = _probe(
        manifest,
        str(tmp_path / "head.json"),
        "--workers",
        "2",
        "--take",
        "5",
        "--state-out",
        str(state),
    )["batches"]
    saved = json.loads(state.read_text())
    assert saved["batches"] == 5 and saved["workers"]  # positions, not a replay count only
    tail = _probe(manifest, str(tmp_path / "tail.json"), "--workers", "2", "--state-in", str(state))
    assert head + tail["batches"] == full
    assert len(full) > 8


def test_resume_with_other_worker_count_is_refused(synth_dir):
    from distrec.config import ConfigError

    m = load_manifest(synth_dir / "tiny")
    a = StreamLoader(m, spec(num_workers=2))
    state = a.state_dict()
    with pytest.raises(ConfigError, match="saved num_workers=2, now 1"):
        StreamLoader(m, spec(num_workers=0)).load_state_dict(state)


def _corrupt_copy(tmp_path: Path, synth_dir: Path) -> tuple[Path, str]:
    copy = tmp_path / "tiny"
    shutil.copytree(synth_dir / "tiny", copy)
    shard = sorted((copy / "shards").glob("*.tar"))[3]
    shard.write_bytes(shard.read_bytes()[:1500] + b"\x07garbage" * 40)
    return copy, shard.name


def test_corrupt_shard_fails_naming_shard_and_offset(tmp_path, synth_dir):
    copy, name = _corrupt_copy(tmp_path, synth_dir)
    with pytest.raises(CorruptShardError, match=rf"{name} \(near byte offset \d+\)"):
        list(StreamLoader(load_manifest(copy), spec()))


def test_corrupt_shard_skip_counts_and_keeps_batch_count(tmp_path, synth_dir):
    copy, _ = _corrupt_copy(tmp_path, synth_dir)
    loader = StreamLoader(load_manifest(copy), spec(corrupt="skip"))
    expected = len(loader)
    batches = list(loader)
    assert len(batches) == expected
    assert max(b["skipped_shards"] for b in batches) == 1
    seen = flat(users(b) for b in batches)
    assert 240 <= len(seen) < 300 and len(seen) == len(set(seen))


def test_resampled_mode_has_fixed_length_and_differs_per_epoch(synth_dir):
    loader = StreamLoader(load_manifest(synth_dir / "tiny"), spec(resampled=True), epoch_batches=7)
    a, b = [users(x) for x in loader], [users(x) for x in loader]
    assert len(a) == len(b) == 7 and a != b


def test_few_shot_fraction_is_a_fixed_user_subset(synth_dir):
    m = load_manifest(synth_dir / "tiny")
    loader = StreamLoader(m, spec(train_fraction=0.3))
    one = sorted(flat(users(b) for b in loader))
    two = sorted(flat(users(b) for b in loader))
    assert one == two and 60 <= len(one) <= 120
    assert len(loader) == -(-len(one) // 16)  # one worker: no padding batches needed


def test_mixture_is_deterministic_weighted_and_resumable(synth_dir, prepared_dir):
    def make():
        return MixtureLoader(
            {
                "tiny": StreamLoader(load_manifest(synth_dir / "tiny"), spec()),
                "ml-100k": StreamLoader(load_manifest(prepared_dir / "ml-100k"), spec()),
            },
            weights={"tiny": 3.0, "ml-100k": 1.0},
            seed=1,
        )

    full = [(b["domain"], users(b)) for b in make()]
    domains = [d for d, _ in full]
    assert domains.count("tiny") > domains.count("ml-100k")
    mix = make()
    it = iter(mix)
    head = [(b["domain"], users(b)) for _, b in zip(range(9), it, strict=False)]
    state = json.loads(json.dumps(mix.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    assert head + [(b["domain"], users(b)) for b in resumed] == full


def test_prefetching_the_next_epoch_changes_nothing(synth_dir):
    def epochs(prefetch: bool) -> list[list[int]]:
        m = load_manifest(synth_dir / "tiny")
        mix = MixtureLoader({"tiny": StreamLoader(m, spec(num_workers=2))})
        out = []
        for _ in range(3):
            out.append(flat(users(b) for b in itertools.islice(iter(mix), mix.batches_left())))
            if prefetch:
                mix.prefetch()
        return out

    plain, early = epochs(False), epochs(True)
    assert plain == early
    assert all(sorted(e) == list(range(300)) for e in early)


def test_shards_stream_through_a_pipe_url(synth_dir):
    m = load_manifest(synth_dir / "tiny")
    local = [users(b) for b in StreamLoader(m, spec())]
    piped = [users(b) for b in StreamLoader(m, spec(shard_url="pipe:cat {root}/shards/{shard}"))]
    assert piped == local and sorted(flat(piped)) == list(range(300))


def _targets(batch) -> list[tuple[int, int]]:
    """(user, target item) pairs a batch trains on."""
    out = []
    for row, user in enumerate(batch["users"].tolist()):
        out += [(user, t) for t in batch["targets"][row].tolist() if t > 0]
    return out


def _all_training_targets(m) -> list[tuple[int, int]]:
    from distrec.data.shards import read_sequences
    from distrec.data.writer import train_part

    return [
        (s["index"], t) for s in read_sequences(m.shard_urls()) for t in train_part(s["items"])[1:]
    ]


def test_all_windows_train_every_target_once_per_epoch_over_ranks(synth_dir):
    from collections import Counter

    m = load_manifest(synth_dir / "tiny")
    loaders = [
        StreamLoader(m, spec(max_history=4, train_window="all"), rank=r, world_size=2)
        for r in range(2)
    ]
    per_rank = [[b for b in loader] for loader in loaders]
    assert len(per_rank[0]) == len(per_rank[1]) == len(loaders[0])
    seen = Counter(t for batches in per_rank for b in batches for t in _targets(b))
    assert seen == Counter(_all_training_targets(m))
    assert loaders[0].stream.targets_per_epoch() == sum(seen.values())


def test_last_window_leaves_targets_out_and_random_windows_reach_them(synth_dir):
    m = load_manifest(synth_dir / "tiny")
    every = set(_all_training_targets(m))
    last = StreamLoader(m, spec(max_history=4, train_window="last"))
    seen_last = {t for b in last for t in _targets(b)}
    rand = StreamLoader(m, spec(max_history=4, train_window="random"))
    seen_random = {t for _ in range(12) for b in rand for t in _targets(b)}
    assert seen_last < every and len(seen_last) < 0.6 * len(every)
    assert len(seen_random) > 0.9 * len(every) and seen_random <= every


def test_random_windows_resume_mid_epoch_exactly(synth_dir):
    m = load_manifest(synth_dir / "tiny")
    s = spec(max_history=4, train_window="random")
    full = StreamLoader(m, s)
    next(iter(full))  # epoch 0 consumed partially is irrelevant: compare epoch 1
    full = StreamLoader(m, s)
    [b for b in full]
    reference = [b["inputs"].tolist() for b in full]  # epoch 1
    part = StreamLoader(m, s)
    [b for b in part]
    it = iter(part)
    head = [next(it)["inputs"].tolist() for _ in range(3)]
    state = json.loads(json.dumps(part.state_dict()))
    resumed = StreamLoader(m, s)
    resumed.load_state_dict(state)
    assert head + [b["inputs"].tolist() for b in resumed] == reference


def test_resume_with_another_train_window_is_refused(synth_dir):
    from distrec.config import ConfigError

    m = load_manifest(synth_dir / "tiny")
    state = StreamLoader(m, spec(train_window="all")).state_dict()
    with pytest.raises(ConfigError, match="saved train_window='all', now 'random'"):
        StreamLoader(m, spec()).load_state_dict(state)


def test_close_shuts_down_prefetched_workers(synth_dir):
    import multiprocessing

    loader = StreamLoader(load_manifest(synth_dir / "tiny"), spec(num_workers=1))
    [b for b in loader]
    loader.prefetch()  # what fit does before its last evaluation
    assert multiprocessing.active_children()
    mix = MixtureLoader({"tiny": loader})
    mix.close()
    assert loader._pending is None and not multiprocessing.active_children()

"""MDS shards from Python: tessera.data.MdsReader and mds_inspect on a data set built by hand with the standard
library (struct + json), the layout MosaicML Streaming writes (docs/streaming.md)."""
import json
import struct

import pytest
import torch

import tessera


def write_mds(folder, samples):
    """One uncompressed shard with columns label (int), name (str), x (ndarray:float32:2,2), sorted by name."""
    config = {"column_encodings": ["int", "str", "ndarray:float32:2,2"], "column_names": ["label", "name", "x"],
              "column_sizes": [8, None, 16], "compression": None, "format": "mds", "hashes": [],
              "size_limit": 1 << 26, "version": 2}
    records = [struct.pack("<I", len(name.encode())) + struct.pack("<q", label) + name.encode()
               + struct.pack("<4f", *x) for label, name, x in samples]
    head = json.dumps(config, sort_keys=True).encode()
    offsets = [4 + 4 * (len(records) + 1) + len(head)]
    for r in records:
        offsets.append(offsets[-1] + len(r))
    data = struct.pack("<I", len(records)) + struct.pack(f"<{len(offsets)}I", *offsets) + head + b"".join(records)
    (folder / "shard.00000.mds").write_bytes(data)
    entry = dict(config, raw_data={"basename": "shard.00000.mds", "bytes": len(data), "hashes": {}},
                 samples=len(records), zip_data=None)
    (folder / "index.json").write_text(json.dumps({"shards": [entry], "version": 2}, sort_keys=True))


SAMPLES = [(3, "coat", [0.5, 1.0, -2.0, 4.25]), (-7, "", [1, 2, 3, 4]), (1 << 40, "h\u00e9", [0, 0, 0, 1e-3])]


def test_mds_reader_reads_a_hand_built_shard(tmp_path):
    write_mds(tmp_path, SAMPLES)
    reader = tessera.data.MdsReader(tmp_path.as_posix())
    assert len(reader) == 3 and reader.num_shards == 1
    assert reader.column_names == ["label", "name", "x"]
    assert reader.column_encodings == ["int", "str", "ndarray:float32:2,2"]
    for i, (label, name, x) in enumerate(SAMPLES):
        sample = reader[i]
        assert sample["label"].dtype == torch.int64 and sample["label"].item() == label
        assert sample["name"] == name
        assert sample["x"].dtype == torch.float32 and sample["x"].shape == (2, 2)
        assert torch.equal(sample["x"], torch.tensor(x, dtype=torch.float32).view(2, 2))
    assert reader[-1]["name"] == SAMPLES[-1][1]
    assert [s["name"] for s in reader] == [name for _, name, _ in SAMPLES]  # iteration ends with IndexError
    with pytest.raises(IndexError):
        reader[3]
    info = tessera.data.mds_inspect(tmp_path.as_posix())
    assert (info["samples"], info["shards"], info["compression"]) == (3, 1, "")
    assert len(info["checksum"]) == 16


def test_mds_checksum_follows_the_samples(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_mds(tmp_path / "a", SAMPLES)
    write_mds(tmp_path / "b", SAMPLES[:2] + [(1 << 40, "h\u00e9", [0, 0, 0, 2e-3])])
    a = tessera.data.mds_inspect((tmp_path / "a").as_posix())["checksum"]
    b = tessera.data.mds_inspect((tmp_path / "b").as_posix())["checksum"]
    assert a != b
    assert a == tessera.data.mds_inspect((tmp_path / "a").as_posix())["checksum"]


def test_mds_corrupt_shard_is_an_input_error_naming_the_file(tmp_path):
    write_mds(tmp_path, SAMPLES)
    shard = tmp_path / "shard.00000.mds"
    shard.write_bytes(struct.pack("<I", 2) + shard.read_bytes()[4:])  # header says 2 samples, the index 3
    with pytest.raises(tessera.InputError, match="shard.00000.mds: holds 2 samples, index.json says 3"):
        tessera.data.MdsReader(tmp_path.as_posix())[0]
    with pytest.raises(tessera.InputError, match="index.json not found"):
        tessera.data.MdsReader((tmp_path / "missing").as_posix())


def test_streaming_order_is_a_resumable_permutation():
    offsets = [0, 10, 35, 36, 80, 237]
    full = tessera.data.streaming_order(offsets, seed=4, epoch=2, batch_size=16, partitions=4, shuffle_block_size=24)
    assert full.dtype == torch.int64 and sorted(full.tolist()) == list(range(237))
    assert not torch.equal(full, tessera.data.streaming_order(offsets, 4, 3, 16, partitions=4, shuffle_block_size=24))
    for begin in (0, 1, 100, 236, 237):
        rest = tessera.data.streaming_order(offsets, 4, 2, 16, begin, -1, True, 24, 4)
        assert torch.equal(rest, full[begin:])
    assert tessera.data.streaming_order(offsets, 4, 2, 16, shuffle=False).tolist() == list(range(237))
    with pytest.raises(tessera.InputError, match="must not decrease"):
        tessera.data.streaming_order([0, 5, 3], 0, 0, 8)


def test_streaming_sampler_starts_anywhere_in_the_order(tmp_path):
    write_mds(tmp_path, SAMPLES)
    reader = tessera.data.MdsReader(tmp_path.as_posix())
    assert reader.shard_offsets == [0, 3]
    sampler = tessera.data.StreamingSampler([0, 10, 35, 36, 80, 237], batch_size=16, seed=4, partitions=4,
                                            shuffle_block_size=24)
    sampler.set_epoch(2)
    full = list(sampler)
    assert full == tessera.data.streaming_order([0, 10, 35, 36, 80, 237], 4, 2, 16, partitions=4,
                                                shuffle_block_size=24).tolist()
    sampler.set_epoch(2, seed=4, start=50)
    assert list(sampler) == full[50:]
    assert list(sampler) == full  # the next pass is whole again
    assert sorted(tessera.data.StreamingSampler(reader, batch_size=2)) == [0, 1, 2]
    with pytest.raises(tessera.InputError, match="batch_size must be an int >= 1"):
        tessera.data.StreamingSampler(reader, batch_size=0)


def test_streaming_recipe_fetches_a_remote_into_a_bounded_cache(tmp_path):
    """A recipe's streaming dataset with a remote (file://) and a cache limit, from Python: the shard lands in the
    cache byte for byte and training runs; a bad cache_limit is an InputError at its line and column."""
    remote, cache = tmp_path / "remote", tmp_path / "cache"
    remote.mkdir()
    write_mds(remote, [(i % 2, f"s{i}", [float(i), 0.0, 0.0, 1.0]) for i in range(12)])

    def recipe(cache_limit):
        return {"max_duration": "1ep", "seed": 0, "model": {"mlp": {"hidden": [4]}},
                "optimizer": {"sgd": {"lr": 0.1}},
                "data": {"train": {"dataset": {"streaming": {"remote": "file://" + remote.as_posix(),
                                                             "local": cache.as_posix(), "input": "x",
                                                             "cache_limit": cache_limit, "download_retry": 1}},
                                   "loader": {"batch_size": 4}}}}

    trainer = tessera.Trainer(recipe("1mb"))
    trainer.fit()
    assert (cache / "shard.00000.mds").read_bytes() == (remote / "shard.00000.mds").read_bytes()
    assert (cache / "index.json").read_bytes() == (remote / "index.json").read_bytes()
    with pytest.raises(tessera.InputError, match=r"cache_limit: \"10 parsecs\" has an unknown unit"):
        tessera.Trainer(recipe("10 parsecs"))
    with pytest.raises(tessera.InputError, match="is less than reading needs at once"):
        tessera.Trainer(recipe("100"))


def test_mixed_streams_train_in_stratified_and_per_stream_batches(tmp_path):
    """Two MDS folders mixed by a Trainer built from Python (train_data's streaming dataset): with stratified batching
    every batch holds each stream's share of it; per stream, each batch comes from one stream (docs/streaming.md,
    "Batching")."""
    for name, label, n in (("a", 0, 12), ("b", 1, 4)):
        (tmp_path / name).mkdir()
        write_mds(tmp_path / name, [(label, f"{name}{i}", [i, 0, 0, 1]) for i in range(n)])

    class Targets(tessera.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def after_dataloader(self, state, logger):
            self.seen.append(sorted(state.batch["target"].tolist()))

    def run(method):
        targets = Targets()
        streams = [{"local": (tmp_path / "a").as_posix()}, {"local": (tmp_path / "b").as_posix()}]
        tessera.Trainer(model={"mlp": {"hidden": [4]}},
                        train_data={"dataset": {"streaming": {"streams": streams, "input": "x",
                                                              "batching_method": method}},
                                    "loader": {"batch_size": 4, "workers": 0}},
                        optimizer={"sgd": {"lr": 0.05}}, max_duration="2ep", seed=0, threads=1,
                        callbacks=[targets]).fit()
        return targets.seen

    # 12 + 4 samples in batches of 4: 3 + 1 rows, 4 batches an epoch.
    assert run("stratified") == [[0, 0, 0, 1]] * 8
    # 3 batches of a's, 1 of b's, each epoch.
    per_stream = run("per_stream")
    assert sorted(per_stream) == [[0, 0, 0, 0]] * 6 + [[1, 1, 1, 1]] * 2
    assert per_stream[:4] != per_stream[4:], "the streams' batches are shuffled together, afresh each epoch"
    with pytest.raises(tessera.InputError, match="device_per_stream .* would tie the order to the number of ranks"):
        run("device_per_stream")

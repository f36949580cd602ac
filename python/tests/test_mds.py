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


# -- writing from Python, numbers as text, merging parts ---------------------------------------------------------

def hand_shard(config, records):
    """The bytes of one uncompressed shard of `records` (as Streaming lays it out) and its index.json text."""
    head = json.dumps(config, sort_keys=True).encode()
    offsets = [4 + 4 * (len(records) + 1) + len(head)]
    for r in records:
        offsets.append(offsets[-1] + len(r))
    data = struct.pack("<I", len(records)) + struct.pack(f"<{len(offsets)}I", *offsets) + head + b"".join(records)
    entry = dict(config, raw_data={"basename": "shard.00000.mds", "bytes": len(data), "hashes": {}},
                 samples=len(records), zip_data=None)
    return data, json.dumps({"shards": [entry], "version": 2}, sort_keys=True)


def test_mds_writer_writes_the_bytes_streaming_lays_out(tmp_path):
    np = pytest.importorskip("numpy")
    (tmp_path / "hand").mkdir()
    write_mds(tmp_path / "hand", SAMPLES)
    with tessera.data.MdsWriter(tmp_path / "ours", {"x": "ndarray:float32:2,2", "label": "int", "name": "str"}) as out:
        for k, (label, name, x) in enumerate(SAMPLES):  # arrays as numpy and as torch, labels as int and numpy
            out.write({"label": np.int64(label) if k else label, "name": name,
                       "x": np.array(x, np.float32).reshape(2, 2) if k % 2 else torch.tensor(x).view(2, 2)})
    for name in ("shard.00000.mds", "index.json"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "hand" / name).read_bytes(), name


def test_mds_writer_stores_floats_as_pythons_str_and_reads_back_python_values(tmp_path):
    np = pytest.importorskip("numpy")
    import decimal
    rng = np.random.default_rng(7)
    floats = [float(rng.standard_normal() * 10.0 ** int(rng.integers(-320, 300))) for _ in range(3000)]
    floats += [0.0, -0.0, 1e16, 1e-5, 1e-4, 9999999999999998.0, 5e-324, 1.7976931348623157e308, float("inf"),
               float("-inf"), float("nan"), 2.0 ** 63, 0.1 + 0.2]
    with tessera.data.MdsWriter(tmp_path / "f", {"f": "str_float"}) as out:
        for f in floats:
            out.write({"f": f})
    config = {"column_encodings": ["str_float"], "column_names": ["f"], "column_sizes": [None], "compression": None,
              "format": "mds", "hashes": [], "size_limit": 1 << 26, "version": 2}
    records = [struct.pack("<I", len(str(f))) + str(f).encode() for f in floats]
    data, index = hand_shard(config, records)
    assert (tmp_path / "f" / "shard.00000.mds").read_bytes() == data  # every float's text is Python's str()
    assert (tmp_path / "f" / "index.json").read_text() == index
    read = [s["f"] for s in tessera.data.MdsReader(tmp_path / "f")]
    assert [str(f) for f in read] == [str(f) for f in floats]

    columns = {"n": "str_int", "d": "str_decimal", "j": "json", "b": "bytes", "u": "ndarray:uint16", "a": "ndarray",
               "s": "uint8"}  # bytes also from a bytearray
    values = [{"n": -(2 ** 62), "d": decimal.Decimal("-1.50E-3"), "j": {"k": [1, None, "\u00e9"], "t": True},
               "b": b"\x00\x01", "u": np.array([0, 65535], np.uint16), "a": np.arange(6, dtype=np.int16).reshape(2, 3),
               "s": np.uint8(200)},
              {"n": 7, "d": 3, "j": "just text", "b": bytearray(b""), "u": np.array([[1]], np.uint16),
               "a": torch.ones(2, dtype=torch.float64), "s": 0}]
    with tessera.data.MdsWriter(tmp_path / "all", columns, compression="zstd", hashes=["xxh3_64"]) as out:
        for v in values:
            out.write(v)
    reader = tessera.data.MdsReader(tmp_path / "all", verify_hashes=True)
    first, second = reader[0], reader[1]
    assert first["n"] == -(2 ** 62) and isinstance(first["n"], int)
    assert first["d"] == decimal.Decimal("-0.00150") and str(first["d"]) == "-0.00150"  # stored as written: -1.50E-3
    assert first["j"] == {"k": [1, None, "\u00e9"], "t": True} and second["j"] == "just text"
    assert first["b"] == b"\x00\x01" and second["b"] == b""
    assert first["u"].tolist() == [0, 65535] and first["u"].dtype == torch.int32  # widened: torch 1.13 has no uint16
    assert first["a"].dtype == torch.int16 and first["a"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert second["a"].dtype == torch.float64 and first["s"].item() == 200 and second["d"] == 3


def test_mds_writer_refuses_what_it_cannot_store(tmp_path):
    np = pytest.importorskip("numpy")
    columns = {"n": "str_int", "d": "str_decimal", "a": "ndarray", "j": "json"}
    good = {"n": 1, "d": "0.5", "a": torch.zeros(2), "j": [1]}
    out = tessera.data.MdsWriter(tmp_path / "w", columns)
    for column, value, message in [
            ("n", True, 'column "n": a bool is not stored by MDS'),
            ("n", 2 ** 70, "does not fit int64"),
            ("d", 0.1, "a float is not the decimal it prints as"),
            ("a", np.zeros(2, np.uint16), "a uint16 array needs an encoding that names its dtype"),
            ("a", object(), "expected int, float, str, bytes, a torch.Tensor"),
            ("j", float("nan"), "not valid JSON"),
            ("j", {1, 2}, "column 'j' \\(json\\): Object of type set is not JSON serializable"),
    ]:
        with pytest.raises(tessera.InputError, match=message):
            out.write(dict(good, **{column: value}))
    with pytest.raises(tessera.InputError, match="a sample must have exactly the columns a, d, j, n; got a, d, extra"):
        out.write(dict(good, extra=1))
    out.write(good)
    assert out.finish() == {"shards": 1, "samples": 1}
    with pytest.raises(tessera.InputError, match="finished"):
        out.write(good)
    # An exception inside the block leaves the shards written so far but no index.json: never read as whole.
    with pytest.raises(RuntimeError):
        with tessera.data.MdsWriter(tmp_path / "broken", {"n": "int"}, size_limit=64) as broken:
            for i in range(40):
                broken.write({"n": i})
            raise RuntimeError("the conversion failed half-way")
    assert list((tmp_path / "broken").glob("shard.*.mds")) and not (tmp_path / "broken" / "index.json").exists()
    with pytest.raises(tessera.InputError, match="index.json not found"):
        tessera.data.MdsReader(tmp_path / "broken")


def test_mds_writer_stores_pil_images(tmp_path):
    Image = pytest.importorskip("PIL.Image")  # Debian's python3-pil (scripts/install-deps.sh)
    np = pytest.importorskip("numpy")
    pixels = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 3 % 256).astype(np.uint8)
    with tessera.data.MdsWriter(tmp_path / "img", {"p": "png", "q": "pil", "g": "png"}) as out:
        out.write({"p": Image.fromarray(pixels), "q": Image.fromarray(pixels), "g": Image.fromarray(pixels[:, :, 0])})
    sample = tessera.data.MdsReader(tmp_path / "img")[0]
    assert sample["p"].tolist() == pixels.tolist() and sample["q"].tolist() == pixels.tolist()
    assert sample["g"].shape == (4, 5, 1) and sample["g"][:, :, 0].tolist() == pixels[:, :, 0].tolist()
    with pytest.raises(tessera.InputError, match="PIL mode 'P' is not stored; convert the image"):
        tessera.data.MdsWriter(tmp_path / "p", {"p": "png"}).write({"p": Image.fromarray(pixels).convert("P")})


def test_parts_written_in_parallel_merge_into_one_data_set(tmp_path):
    import concurrent.futures
    root = tmp_path / "data"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # as parallel writers would, each into its own folder
        list(pool.map(lambda p: write_part(root / f"part-{p}", p), range(11)))
    info = tessera.data.merge_index(root)
    assert info["parts"] == [f"part-{p}" for p in range(11)]  # natural order: part-2 before part-10
    assert info["empty_parts"] == [] and info["samples"] == sum(range(11)) * 2 + 11
    labels = [s["label"].item() for s in tessera.data.MdsReader(root)]
    assert labels == [100 * p + i for p in range(11) for i in range(2 * p + 1)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(tessera.InputError, match="no subfolder of .*empty holds an index.json"):
        tessera.data.merge_index(tmp_path / "empty")


def write_part(folder, p):
    with tessera.data.MdsWriter(folder, {"label": "int"}, size_limit=100) as out:
        for i in range(2 * p + 1):
            out.write({"label": 100 * p + i})


def test_streaming_dataset_from_python_serves_the_streaming_order_per_rank_and_resumes(tmp_path):
    np = pytest.importorskip("numpy")
    with tessera.data.MdsWriter(tmp_path / "d", {"x": "ndarray:float32:2", "label": "int"}, size_limit=300) as out:
        for i in range(100):
            out.write({"x": np.array([i, -i], np.float32), "label": i})
    data = tessera.data.StreamingDataset(batch_size=16, seed=3, local=str(tmp_path / "d"), input="x",
                                         shuffle_block_size=20)
    assert len(data) == 7 and data.num_classes == 100  # 100 samples: 6 batches of 16 and one of 4
    epoch0 = [b["target"].tolist() for b in data]
    order = tessera.data.streaming_order(tessera.data.MdsReader(tmp_path / "d").shard_offsets, seed=3, epoch=0,
                                         batch_size=16, shuffle_block_size=20).tolist()
    assert sum(epoch0, []) == order and len(epoch0[-1]) == 4  # the C++ DataLoader's order, sample id = label
    assert sum([b["target"].tolist() for b in data], []) != order  # the next pass is epoch 1
    # Two ranks take the halves of every global batch.
    halves = [tessera.data.StreamingDataset(batch_size=16, seed=3, rank=r, world_size=2, local=str(tmp_path / "d"),
                                            input="x", shuffle_block_size=20) for r in (0, 1)]
    assert [a["target"].tolist() + b["target"].tolist() for a, b in zip(*halves)] == epoch0
    assert halves[0].state_dict() == {"epoch": 1, "batch": 0}
    # Stopped after 3 batches, resumed from its state in a new object: the same remaining batches.
    data.set_epoch(0)
    seen = []
    for batch in data:
        seen.append(batch["target"].tolist())
        if len(seen) == 3:
            break
    state = data.state_dict()
    assert state == {"epoch": 0, "batch": 3}
    resumed = tessera.data.StreamingDataset(batch_size=16, seed=3, local=str(tmp_path / "d"), input="x",
                                            shuffle_block_size=20)
    resumed.load_state_dict(state)
    assert seen + [b["target"].tolist() for b in resumed] == epoch0
    assert data.native.get_batch([7])["input"].tolist() == [[7.0, -7.0]]  # the inputs come with their labels


def test_streaming_dataset_from_python_feeds_token_ids_and_refuses_bad_options(tmp_path):
    np = pytest.importorskip("numpy")
    with tessera.data.MdsWriter(tmp_path / "t", {"ids": "ndarray:uint16"}) as out:
        for i in range(10):
            out.write({"ids": np.arange(i, i + 9, dtype=np.uint16)})
    data = tessera.data.StreamingDataset(batch_size=4, shuffle=False, local=str(tmp_path / "t"), input="ids",
                                         seq_length=8)
    first = next(iter(data))
    assert first["input"].shape == (4, 8) and first["target"].tolist()[1] == list(range(2, 10))
    assert data.tokens_per_example == 8 and data.num_classes == 18  # the largest id, 17, + 1
    with pytest.raises(tessera.InputError, match="locl"):
        tessera.data.StreamingDataset(batch_size=4, locl=str(tmp_path / "t"))
    with pytest.raises(tessera.InputError, match="streaming.local: folder .*nowhere does not exist"):
        tessera.data.StreamingDataset(batch_size=4, local=str(tmp_path / "nowhere"))
    with pytest.raises(tessera.InputError, match="rank 2 is not below world_size 2"):
        tessera.data.StreamingDataset(batch_size=4, rank=2, world_size=2, local=str(tmp_path / "t"), input="ids",
                                      seq_length=8)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=1)
    with pytest.raises(Exception, match="iterate it in the main process"):
        next(iter(loader))

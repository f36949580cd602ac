"""Helper of tests/core/mds_interop_test.cpp, run with the Python of the MosaicML Streaming venv
(scripts/install-peers.sh streaming). Not a pytest file.

  mds_interop.py write DIR COMPRESSION      writes samples of every encoding with streaming.MDSWriter
  mds_interop.py fashion DIR LIMIT SIZE     writes the first LIMIT Fashion-MNIST training samples the way
                                            `tessera-shard write --fashion-mnist` does
  mds_interop.py numbers DIR                writes numbers as text and JSON (str_int, str_float, str_decimal,
                                            json, str columns) with streaming.MDSWriter
  mds_interop.py parts ROOT                 writes three parts into ROOT's subfolders and joins them with
                                            streaming's merge_index
  mds_interop.py dump DIR OUT.json          reads every sample with streaming.StreamingDataset, as JSON
  mds_interop.py batches METHOD BATCH OUT.json DIR...
                                            epoch 0's batches of labels of streams DIR... with batching_method
                                            METHOD, as JSON
"""
import contextlib
import fcntl
import gzip
import json
import os
import sys
import tempfile
from decimal import Decimal

import numpy as np
from PIL import Image

COLUMNS = {
    'i': 'int', 'u8': 'uint8', 'u16': 'uint16', 'u32': 'uint32', 'u64': 'uint64', 'i8': 'int8', 'i16': 'int16',
    'i32': 'int32', 'i64': 'int64', 'f16': 'float16', 'f32': 'float32', 'f64': 'float64', 's': 'str', 'b': 'bytes',
    'a': 'ndarray', 'af': 'ndarray:float32', 'ax': 'ndarray:int16:2,3', 'png': 'png', 'jpg': 'jpeg', 'pil': 'pil',
    'si': 'str_int', 'sf': 'str_float', 'sd': 'str_decimal', 'js': 'json',
}
NUMBERS = {'si': 'str_int', 'sf': 'str_float', 'sd': 'str_decimal', 'js': 'json', 's': 'str'}
DTYPES = ['uint8', 'int8', 'uint16', 'int16', 'uint32', 'int32', 'uint64', 'int64', 'float16', 'float32', 'float64']


def image(rng, mode, h, w):
    channels = {'L': 1, 'LA': 2, 'RGB': 3, 'RGBA': 4}[mode]
    # Smooth content plus a little noise, so JPEG has something real to encode.
    y, x = np.mgrid[0:h, 0:w]
    base = (y * 7 + x * 3)[:, :, None] + np.arange(channels) * 40 + rng.integers(0, 8, (h, w, channels))
    px = (base % 250).astype(np.uint8)
    return Image.fromarray(px[:, :, 0] if channels == 1 else px)  # mode from the shape: L, LA, RGB, RGBA


def sample(i):
    rng = np.random.default_rng(1000 + i)
    dtype = DTYPES[i % len(DTYPES)]
    shape = tuple(int(d) for d in rng.integers(1, 5, 1 + i % 3))
    if i == 7:
        shape = (2, 300)  # a dimension >= 256: the shape is stored as uint16
    values = rng.integers(0, 100, shape) if dtype[0] in 'ui' else rng.standard_normal(shape)
    return {
        'i': int(rng.integers(-2**62, 2**62)), 'u8': np.uint8(rng.integers(0, 256)),
        'u16': np.uint16(rng.integers(0, 2**16)), 'u32': np.uint32(rng.integers(0, 2**32)),
        'u64': np.uint64(rng.integers(0, 2**62)), 'i8': np.int8(rng.integers(-128, 128)),
        'i16': np.int16(rng.integers(-2**15, 2**15)), 'i32': np.int32(rng.integers(-2**31, 2**31)),
        'i64': np.int64(rng.integers(-2**62, 2**62)), 'f16': np.float16(rng.standard_normal()),
        'f32': np.float32(rng.standard_normal()), 'f64': np.float64(rng.standard_normal()),
        's': 'tessera \u00e9\u4e2d\U0001F600'[:i % 11], 'b': bytes(rng.integers(0, 256, i % 6, dtype=np.uint8)),
        'a': values.astype(dtype), 'af': rng.standard_normal(1 + i % 5).astype(np.float32),
        'ax': rng.integers(-1000, 1000, (2, 3)).astype(np.int16),
        'png': image(rng, ['L', 'LA', 'RGB', 'RGBA'][i % 4], 5 + i % 3, 9),
        'jpg': image(rng, ['L', 'RGB'][i % 2], 16, 8 + i % 9),
        'pil': image(rng, ['L', 'RGB', 'RGBA'][i % 3], 3, 4 + i % 2),
        **numbers(rng, i),
    }


def numbers(rng, i):
    """Values of the text columns: floats of every magnitude (Python's str() turns scientific below 1e-4 and from
    1e16), decimals with trailing zeros and exponents, JSON of every kind of value."""
    special = [0.0, -0.0, 1e16, 1e-5, 0.0001, 9999999999999998.0, 5e-324, 1.7976931348623157e308, 0.1, 100.0]
    f = special[i % 10] if i % 3 == 0 else float(rng.standard_normal() * 10.0 ** int(rng.integers(-30, 30)))
    return {
        'si': int(rng.integers(-2**62, 2**62)) * (1 if i % 2 else -1),
        'sf': f,
        'sd': Decimal(f'{rng.standard_normal():.{i % 9}f}') * Decimal(10) ** int(rng.integers(-9, 9)),
        'js': {'i': i, 'f': float(rng.standard_normal()), 'v': [1.5, None, True, 'x\u00e9\U0001F600'][:1 + i % 4],
               'n': {'k': i % 3 == 0}} if i % 5 else ['list', i],
        's': 'text ' * (i % 4),
    }


def write_numbers(out):
    from streaming import MDSWriter
    with MDSWriter(out=out, columns=NUMBERS, size_limit=3000) as w:
        for i in range(300):
            w.write(numbers(np.random.default_rng(i), i))


def write_parts(root):
    """Three parts of different sizes, as parallel writers leave them, merged by Streaming."""
    from streaming import MDSWriter
    from streaming.base.util import merge_index
    start = 0
    for part, n in enumerate((7, 12, 5)):
        with MDSWriter(out=os.path.join(root, f'part-{part}'), columns={'label': 'int', 'name': 'str'},
                       size_limit=200) as w:
            for i in range(start, start + n):
                w.write({'label': i, 'name': f'sample {i}'})
        start += n
    merge_index(root, keep_local=True)


def write(out, compression):
    from streaming import MDSWriter
    with MDSWriter(out=out, columns=COLUMNS, compression=compression or None, hashes=['xxh3_64', 'xxh64'],
                   size_limit=4000) as w:
        for i in range(40):
            w.write(sample(i))


def fashion(out, limit, size_limit):
    from streaming import MDSWriter
    folder = '/usr/share/datasets/fashion-mnist/'
    images = np.frombuffer(gzip.open(folder + 'train-images-idx3-ubyte.gz').read()[16:], np.uint8).reshape(-1, 28, 28)
    labels = np.frombuffer(gzip.open(folder + 'train-labels-idx1-ubyte.gz').read()[8:], np.uint8)
    with MDSWriter(out=out, columns={'image': 'ndarray:uint8:28,28', 'label': 'int'}, hashes=['xxh3_64'],
                   size_limit=size_limit) as w:
        for i in range(limit):
            w.write({'image': images[i], 'label': int(labels[i])})


def to_json(v):
    if isinstance(v, Image.Image):
        a = np.asarray(v)
        a = a[:, :, None] if a.ndim == 2 else a
        return {'shape': list(a.shape), 'data': a.ravel().tolist()}
    if isinstance(v, np.ndarray):
        return {'dtype': v.dtype.name, 'shape': list(v.shape), 'data': v.ravel().tolist()}
    if isinstance(v, bytes):
        return {'hex': v.hex()}
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Decimal):
        return {'decimal': str(v)}
    return v


@contextlib.contextmanager
def streaming_alone():
    """Holds a machine-wide lock while Streaming reads: a StreamingDataset picks its shared-memory prefix by looking
    for one no other process uses, which races when two start at once (ctest -j runs the interop tests side by side:
    one failed now and then). No clean_stale_shared_memory(): it unlinks every Streaming segment of the machine."""
    with open(os.path.join(tempfile.gettempdir(), 'tessera_streaming_interop.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def dump(local, out):
    from streaming import StreamingDataset
    with streaming_alone():
        ds = StreamingDataset(local=local, batch_size=1, shuffle=False)
        samples = [{k: to_json(v) for k, v in ds[i].items()} for i in range(len(ds))]
    with open(out, 'w') as f:
        json.dump(samples, f)


def batches(method, batch_size, out, *locals_):
    """Epoch 0's batches of labels of Streaming's StreamingDataset over the streams in `locals_` (each read whole),
    with `batching_method` `method` and one canonical node, read by a torch DataLoader in batches of `batch_size`."""
    from streaming import Stream, StreamingDataset
    import torch
    with streaming_alone():
        ds = StreamingDataset(streams=[Stream(local=local) for local in locals_], batch_size=batch_size,
                              batching_method=method, shuffle=True, num_canonical_nodes=1)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=0)
        labels = [b['label'].tolist() for b in loader]
    with open(out, 'w') as f:
        json.dump(labels, f)


if __name__ == '__main__':
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'write':
        write(args[0], args[1] if len(args) > 1 else '')
    elif cmd == 'fashion':
        fashion(args[0], int(args[1]), int(args[2]))
    elif cmd == 'numbers':
        write_numbers(args[0])
    elif cmd == 'parts':
        write_parts(args[0])
    elif cmd == 'dump':
        dump(args[0], args[1])
    elif cmd == 'batches':
        batches(args[0], int(args[1]), args[2], *args[3:])
    else:
        sys.exit(f'unknown command {cmd}')

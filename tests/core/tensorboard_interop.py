"""Reads a TensorBoard event file written by Tessera with TensorBoard's own code (tests/core/tensorboard_interop_test.cpp).

    tensorboard_interop.py dump EVENTS_FILE OUT_JSON

Writes OUT_JSON: what TensorBoard's EventAccumulator loads (scalars and text per tag, with steps), the hparams
plugin's session-start summary (parsed with the plugin's own protos), and, record by record, whether the bytes equal
what protobuf serializes for the parsed Event; images decoded by PIL (so a field out of order, a default written or a wrong wire type shows).
Runs in the streaming peers' venv (scripts/install-peers.sh streaming), which holds tensorboard.
"""
import io
import json
import struct
import sys

import PIL.Image

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.hparams import plugin_data_pb2


def records(path):
    """The payloads of a TFRecord file, checking both CRCs of each."""
    data = open(path, "rb").read()
    out, at = [], 0
    while at < len(data):
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[at + 8:at + 12])
        payload = data[at + 12:at + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        assert header_crc == masked_crc32c(header), f"record at byte {at}: header CRC"
        assert payload_crc == masked_crc32c(payload), f"record at byte {at}: payload CRC"
        out.append(payload)
        at += 16 + length
    assert at == len(data), "trailing bytes"
    return out


def dump(path, out_path):
    payloads = records(path)
    mismatches = []
    for i, payload in enumerate(payloads):
        event = event_pb2.Event.FromString(payload)
        if event.SerializeToString(deterministic=True) != payload:
            mismatches.append(i)
    first = event_pb2.Event.FromString(payloads[0])

    acc = event_accumulator.EventAccumulator(path, size_guidance=event_accumulator.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    tags = acc.Tags()
    scalars = {tag: [[s.step, s.value] for s in acc.Scalars(tag)] for tag in tags["scalars"]}
    texts, hparams, start_time, sessions = {}, None, None, 0
    for tag in tags["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data
        if plugin.plugin_name == "text":
            texts[tag] = [[t.step, t.tensor_proto.string_val[0].decode()] for t in acc.Tensors(tag)]
        elif plugin.plugin_name == "hparams":
            sessions = len(acc.Tensors(tag))
            data = plugin_data_pb2.HParamsPluginData.FromString(plugin.content)
            assert data.WhichOneof("data") == "session_start_info", data
            info = data.session_start_info
            start_time = info.start_time_secs
            hparams = {}
            for name, value in info.hparams.items():
                kind = value.WhichOneof("kind")
                hparams[name] = {kind: getattr(value, kind)}
    images = {}
    for tag in tags["images"]:
        images[tag] = []
        for image in acc.Images(tag):
            picture = PIL.Image.open(io.BytesIO(image.encoded_image_string))
            picture.load()
            assert picture.format == "PNG" and (picture.width, picture.height) == (image.width, image.height)
            images[tag].append({"step": image.step, "size": [picture.width, picture.height], "mode": picture.mode,
                                "extrema": list(picture.getextrema()) if picture.mode == "L" else None})
    json.dump({"records": len(payloads), "reserialize_mismatches": mismatches,
               "file_version": first.file_version, "first_wall_time": first.wall_time,
               "scalars": scalars, "texts": texts, "images": images, "hparams": hparams, "hparams_sessions": sessions,
               "start_time": start_time}, open(out_path, "w"))


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")

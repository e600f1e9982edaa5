"""Writes small safetensors seeds: a header of JSON padded to 8 bytes, then the data."""
import json, struct, sys, os

def image(tensors, metadata=None, pad=True):
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)

def f32(*v): return struct.pack("<%df" % len(v), *v)

out = sys.argv[1]
seeds = {
    "conv-bn.safetensors": image([
        ("conv1.weight", "F32", [2, 1, 2, 2], f32(*[0.5 * i - 1 for i in range(8)])),
        ("bn1.weight", "F32", [2], f32(1.0, 1.0)),
        ("bn1.bias", "F32", [2], f32(0.0, -0.0)),
        ("bn1.running_mean", "F32", [2], f32(0.25, 1e-30)),
        ("bn1.num_batches_tracked", "I64", [], struct.pack("<q", 390)),
        ("fc.weight", "F32", [3, 2], f32(1, 2, 3, 4, 5, float("inf"))),
    ], {"format": "pt", "epoch": "3", "producer": "trainpipe \"seed\"\n"}),
    "dtypes.safetensors": image([
        ("half", "F16", [4], struct.pack("<4H", 0x3c00, 0x8001, 0x7c00, 0x7e00)),
        ("bf16", "BF16", [2, 1], struct.pack("<2H", 0x3f80, 0xff80)),
        ("double", "F64", [2], struct.pack("<2d", 1e300, -2.5)),
        ("bytes", "U8", [3], b"\x01\x02\x03"),
        ("flags", "BOOL", [1], b"\x01"),
        ("ints", "I32", [2], struct.pack("<2i", -1, 7)),
        ("empty", "F32", [0, 4], b""),
        ("scalar", "F32", [], f32(3.0)),
    ]),
    "escapes.safetensors": image([
        ("layer\u00e9.\\\"w\"\n", "F32", [1], f32(2.0)),
        ("\U0001f600", "F32", [1, 1, 1, 1, 1, 1, 1, 1], f32(1.0)),
    ], {}, pad=False),
    "empty.safetensors": image([]),
}
for name, data in seeds.items():
    assert len(data) < 4096
    with open(os.path.join(out, name), "wb") as fp:
        fp.write(data)

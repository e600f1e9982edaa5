#!/usr/bin/env python3
"""Write TFRecord shards of tf.train.Example records from a folder of JPEGs.

The input folder holds one subfolder per class (ImageNet's layout: train/n01440764/*.JPEG);
classes are numbered 1..N in sorted folder order (0 is left for "background", as in
TensorFlow's ImageNet conversion script; read them with label_offset = -1). Each record has
the keys that script writes: image/encoded, image/height, image/width, image/channels,
image/colorspace, image/format, image/filename, image/class/label, image/class/synset and
image/class/text (from --labels-file "synset<TAB>text" lines, when given).

Pure Python: no TensorFlow, no protobuf package; the CRC32C and the protobuf wire format are
implemented here. Image sizes come from the JPEG's SOF marker (no decoder needed); files that
are not baseline/progressive JPEGs are written anyway with height/width 0 and a warning, so
the reader's handling of them can be tested.

Example:
    make_tfrecords.py --input imagenet/train --output out --shards 1024 --name train
    make_tfrecords.py --input small/ --output out --shards 2 --compression gzip
"""

import argparse
import gzip
import os
import random
import struct
import sys
import zlib

# ---------------------------------------------------------------- CRC32C (Castagnoli)

def _make_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table

_TABLE = _make_table()


def crc32c(data, crc=0):
    """CRC32C of data (bytes), continuing from crc (0 to start)."""
    c = crc ^ 0xFFFFFFFF
    table = _TABLE
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data):
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record):
    """One TFRecord: u64 length, masked CRC of it, the data, masked CRC of the data."""
    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", masked_crc(length)) + record +
            struct.pack("<I", masked_crc(record)))

# ---------------------------------------------------------------- protobuf wire format

def varint(v):
    if v < 0:
        v += 1 << 64  # int64: a negative value is a 10-byte varint
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def feature_bytes(values):
    lst = b"".join(field_bytes(1, v) for v in values)           # BytesList.value = 1
    return field_bytes(1, lst)                                  # Feature.bytes_list = 1


def feature_int64(values):
    packed = b"".join(varint(v) for v in values)
    return field_bytes(3, field_bytes(1, packed))               # Feature.int64_list = 3


def feature_float(values):
    packed = b"".join(struct.pack("<f", v) for v in values)
    return field_bytes(2, field_bytes(1, packed))               # Feature.float_list = 2


def example(features):
    """Example { Features { map<string, Feature> feature = 1 } = 1 }; keys sorted."""
    entries = b"".join(
        field_bytes(1, field_bytes(1, k.encode()) + field_bytes(2, v))
        for k, v in sorted(features.items()))
    return field_bytes(1, entries)

# ---------------------------------------------------------------- JPEG header

def jpeg_size(data):
    """(height, width, channels) from the first SOF marker, or None."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    p = 2
    while p + 4 <= len(data):
        if data[p] != 0xFF:
            return None
        m = data[p + 1]
        if m == 0xFF:
            p += 1
            continue
        if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:
            p += 2
            continue
        seg = struct.unpack(">H", data[p + 2:p + 4])[0]
        if m in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if p + 10 > len(data):
                return None
            h, w = struct.unpack(">HH", data[p + 5:p + 9])
            return h, w, data[p + 9]
        if m == 0xDA:
            return None
        p += 2 + seg
    return None

# ---------------------------------------------------------------- writing shards

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe")


def list_images(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        sys.exit("%s: no class subfolders" % root)
    items = []
    for label, synset in enumerate(classes, start=1):
        folder = os.path.join(root, synset)
        for name in sorted(os.listdir(folder)):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                items.append((os.path.join(folder, name), label, synset))
    return classes, items


def read_labels(path):
    texts = {}
    if path:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t", 1)
                if len(parts) == 2:
                    texts[parts[0]] = parts[1]
    return texts


def make_record(path, label, synset, texts):
    with open(path, "rb") as f:
        data = f.read()
    size = jpeg_size(data)
    if size is None:
        print("warning: %s is not a JPEG this script can measure; height/width 0" % path,
              file=sys.stderr)
        size = (0, 0, 3)
    h, w, c = size
    colorspace = {1: b"Grayscale", 3: b"RGB", 4: b"CMYK"}.get(c, b"RGB")
    return example({
        "image/encoded": feature_bytes([data]),
        "image/height": feature_int64([h]),
        "image/width": feature_int64([w]),
        "image/channels": feature_int64([c]),
        "image/colorspace": feature_bytes([colorspace]),
        "image/format": feature_bytes([b"JPEG"]),
        "image/filename": feature_bytes([os.path.basename(path).encode()]),
        "image/class/label": feature_int64([label]),
        "image/class/synset": feature_bytes([synset.encode()]),
        "image/class/text": feature_bytes([texts.get(synset, "").encode()]),
    })


def open_shard(path, compression):
    if compression == "gzip":
        return gzip.open(path, "wb")
    if compression == "zlib":
        return _ZlibWriter(path)
    return open(path, "wb")


class _ZlibWriter:
    def __init__(self, path):
        self.f = open(path, "wb")
        self.z = zlib.compressobj(6, zlib.DEFLATED, 15)

    def write(self, data):
        self.f.write(self.z.compress(data))

    def close(self):
        self.f.write(self.z.flush())
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="folder with one subfolder per class")
    ap.add_argument("--output", required=True, help="folder for the shards")
    ap.add_argument("--name", default="train", help="shard name prefix (default train)")
    ap.add_argument("--pattern", default="%s-%05d-of-%05d",
                    help="shard file name: prefix, index, count (default %%s-%%05d-of-%%05d)")
    ap.add_argument("--shards", type=int, default=1, help="number of shards (default 1)")
    ap.add_argument("--compression", choices=("none", "gzip", "zlib"), default="none")
    ap.add_argument("--shuffle", type=int, default=None, metavar="SEED",
                    help="shuffle the images with this seed (TensorFlow's script shuffles)")
    ap.add_argument("--labels-file", help="synset<TAB>human-readable text, one per line")
    args = ap.parse_args(argv)
    if args.shards < 1:
        ap.error("--shards must be at least 1")

    classes, items = list_images(args.input)
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(items)
    texts = read_labels(args.labels_file)
    os.makedirs(args.output, exist_ok=True)
    for s in range(args.shards):
        part = items[s * len(items) // args.shards:(s + 1) * len(items) // args.shards]
        name = args.pattern % (args.name, s, args.shards)
        if args.compression == "gzip" and not name.endswith(".gz"):
            name += ".gz"
        path = os.path.join(args.output, name)
        tmp = path + ".tmp"
        with open_shard(tmp, args.compression) as f:
            for image_path, label, synset in part:
                f.write(frame(make_record(image_path, label, synset, texts)))
        os.replace(tmp, path)
        print("%s: %d records" % (path, len(part)))
    print("%d images, %d classes (labels 1..%d)" % (len(items), len(classes), len(classes)))
    return 0


def _self_test():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert masked_crc(b"\x1a\x11" + b"CRC test, one two") == 0x5794D08A
    assert varint(-1) == b"\xff" * 9 + b"\x01"


if __name__ == "__main__":
    _self_test()
    sys.exit(main())

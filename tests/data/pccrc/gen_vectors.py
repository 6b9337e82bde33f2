#!/usr/bin/env python3
"""Golden content-information vectors for branchcache, computed independently of the Rust code.

Usage: python3 tests/data/pccrc/gen_vectors.py [OUTDIR]   (default: this script's directory)

Writes, per vector, <name>.bin (the content information structure, MS-PCCRC v1 or v2) and
<name>.json (every field a parser must report, plus a "manifest" of the generating parameters so
a builder can reproduce the .bin byte for byte). Only the Python standard library is used
(hashlib, hmac, struct); nothing here calls the code under test.

Content: byte i of a resource is (i * 7 + 3) % 251, for i in 0..content_length. The content is
never stored, only the content information.

Key derivation (PROTOCOL.md section 1):
  Ks     = H(server_key)                       (v2: first 32 bytes of SHA-512)
  HoD    = v1: H(blockhash_0 || ... || blockhash_n-1) over ALL blocks of the segment
           v2: first32(SHA-512(segment bytes))
  Kp     = HMAC_H(Ks, HoD)                     (v2: first 32 bytes of HMAC-SHA-512)
  HoHoDk = HMAC_H(Kp, HoD || C2), C2 = UTF-16LE("MS_P2P_CACHING") + 00 00
"""

import hashlib
import hmac
import json
import os
import struct
import sys

SERVER_KEY = b"branchcache golden vector server key"
BLOCK = 65536
V1_SEGMENT = 32 * 1024 * 1024
C2 = "MS_P2P_CACHING\0".encode("utf-16-le")
assert len(C2) == 30

V1_ALGOS = {"sha256": (0x800C, "sha256"), "sha384": (0x800D, "sha384"), "sha512": (0x800E, "sha512")}
PERIOD = bytes((i * 7 + 3) % 251 for i in range(251))


def content(start, end):
    """Bytes [start, end) of the deterministic resource."""
    if end <= start:
        return b""
    first = start % 251
    reps = (end - start + first) // 251 + 1
    return (PERIOD * reps)[first:first + (end - start)]


def h(name, data):
    return hashlib.new(name, data).digest()


def v2_hash(data):
    return hashlib.sha512(data).digest()[:32]


def v1_hmac(name, key, msg):
    return hmac.new(key, msg, name).digest()


def v2_hmac(key, msg):
    return hmac.new(key, msg, "sha512").digest()[:32]


def v1_vector(name, length, algo="sha256", start=0, end=None, read_encoding="zero", note=""):
    """A v1 CI describing [start, end) of a `length`-byte resource.

    read_encoding: "zero" writes dwReadBytesInLastSegment = 0 (only if the range reaches the end
    of the last listed segment); "explicit" writes the count (single segment: from the range
    start; several segments: from the last segment's start).
    """
    if end is None:
        end = length
    algo_id, hname = V1_ALGOS[algo]
    ks = h(hname, SERVER_KEY)
    first_seg = start // V1_SEGMENT
    last_seg = (end - 1) // V1_SEGMENT
    segs = []
    for k in range(first_seg, last_seg + 1):
        off = k * V1_SEGMENT
        size = min(V1_SEGMENT, length - off)
        nblocks = (size + BLOCK - 1) // BLOCK
        block_hashes = [h(hname, content(off + j * BLOCK, min(off + (j + 1) * BLOCK, off + size)))
                        for j in range(nblocks)]
        hod = h(hname, b"".join(block_hashes))
        kp = v1_hmac(hname, ks, hod)
        hohodk = v1_hmac(hname, kp, hod + C2)
        # Block lists run from block 0 up to the last block intersecting the range.
        seg_range_end = min(end, off + size)
        listed = (seg_range_end - off + BLOCK - 1) // BLOCK
        segs.append(dict(index=k, offset=off, size=size, block_size=BLOCK, hod=hod, kp=kp,
                         id=hohodk, blocks=block_hashes[:listed]))
    offset_in_first = start - segs[0]["offset"]
    last = segs[-1]
    if read_encoding == "zero":
        assert end == last["offset"] + last["size"], name
        read_bytes = 0
    elif len(segs) == 1:
        read_bytes = end - start
    else:
        read_bytes = end - last["offset"]
    out = struct.pack("<HIIII", 0x0100, algo_id, offset_in_first, read_bytes, len(segs))
    for s in segs:
        out += struct.pack("<QII", s["offset"], s["size"], s["block_size"]) + s["hod"] + s["kp"]
    for s in segs:
        out += struct.pack("<I", len(s["blocks"])) + b"".join(s["blocks"])
    manifest = dict(content_length=length, content="byte i = (i * 7 + 3) % 251",
                    server_key_hex=SERVER_KEY.hex(), version="1", hash_algorithm=algo,
                    request_range=dict(start=start, end=end),
                    dwOffsetInFirstSegment=offset_in_first,
                    dwReadBytesInLastSegment=read_bytes, read_bytes_encoding=read_encoding,
                    note=note)
    return name, out, expected("1", algo, start, end, segs, manifest)


def v2_vector(name, boundaries, start=0, end=None, length_encoding="zero", note=""):
    """A v2 CI for a resource made of segments of the given sizes, describing [start, end).

    length_encoding: "zero" writes ullLengthOfRange = 0 (range must reach the end of the last
    listed segment); "explicit" writes end - start.
    """
    length = sum(boundaries)
    if end is None:
        end = length
    ks = v2_hash(SERVER_KEY)
    segs = []
    off = 0
    for k, size in enumerate(boundaries):
        if off < end and off + size > start:
            hod = v2_hash(content(off, off + size))
            kp = v2_hmac(ks, hod)
            hohodk = v2_hmac(kp, hod + C2)
            segs.append(dict(index=k, offset=off, size=size, block_size=size, hod=hod, kp=kp,
                             id=hohodk, blocks=[]))
        off += size
    offset_in_first = start - segs[0]["offset"]
    last = segs[-1]
    if length_encoding == "zero":
        assert end == last["offset"] + last["size"], name
        range_len = 0
    else:
        range_len = end - start
    out = struct.pack(">BBBQQIQ", 0, 2, 4, segs[0]["offset"], segs[0]["index"], offset_in_first,
                      range_len)
    body = b"".join(struct.pack(">I", s["size"]) + s["hod"] + s["kp"] for s in segs)
    out += struct.pack(">BI", 0, len(body)) + body
    manifest = dict(content_length=length, content="byte i = (i * 7 + 3) % 251",
                    server_key_hex=SERVER_KEY.hex(), version="2", hash_algorithm="sha512-trunc",
                    request_range=dict(start=start, end=end), v2_boundaries=boundaries,
                    ullStartInContent=segs[0]["offset"], ullIndexOfFirstSegment=segs[0]["index"],
                    dwOffsetInFirstSegment=offset_in_first, ullLengthOfRange=range_len,
                    length_encoding=length_encoding, chunks=1, note=note)
    return name, out, expected("2", "sha512-trunc", start, end, segs, manifest)


def expected(version, algo, start, end, segs, manifest):
    return dict(
        version=version,
        hash_algorithm=algo,
        range=dict(start=start, end=end),
        segments=[dict(index=s["index"], offset=s["offset"], size=s["size"],
                       block_size=s["block_size"], hash_of_data=s["hod"].hex(),
                       segment_secret=s["kp"].hex(), segment_id=s["id"].hex(),
                       blocks=[b.hex() for b in s["blocks"]]) for s in segs],
        manifest=manifest,
    )


MIB = 1024 * 1024
SPEC_V2 = [0xF000, 0x15400, 0xB000]


def vectors():
    yield v1_vector("v1_spec_3_2_whole", 128000, note="MS-PCCRC 3.2 layout (IIS encoding)")
    yield v1_vector("v1_spec_3_1_explicit_read", 128000, read_encoding="explicit",
                    note="MS-PCCRC 3.1: dwReadBytesInLastSegment printed as 128000")
    yield v1_vector("v1_spec_3_3_range", 128000, start=102400,
                    note="MS-PCCRC 3.3: range from 102400, block list from block 0")
    yield v1_vector("v1_spec_3_3_range_explicit_read", 128000, start=102400, end=122400,
                    read_encoding="explicit",
                    note="single segment: dwReadBytesInLastSegment counts from the range start")
    yield v1_vector("v1_sha384_whole", 200000, algo="sha384")
    yield v1_vector("v1_sha512_whole", 200000, algo="sha512")
    yield v1_vector("v1_exact_block_multiple", 3 * BLOCK, note="no short last block")
    yield v1_vector("v1_one_byte", 1)
    yield v1_vector("v1_iis_size_99710", 99710, note="same size as the IIS vector: 166 bytes")
    yield v1_vector("v1_multi_segment_70mib", 70 * MIB, note="3 segments: 32, 32, 6 MiB")
    yield v1_vector("v1_multi_segment_range_explicit_read", 70 * MIB, start=MIB + 5,
                    end=33 * MIB + 70000, read_encoding="explicit",
                    note="range across segments 0-1, dwReadBytesInLastSegment explicit")
    yield v1_vector("v1_spec_3_4_whole_125mb", 131072000, read_encoding="explicit",
                    note="MS-PCCRC 3.4: 4 segments, dwReadBytesInLastSegment printed explicitly")
    yield v1_vector("v1_spec_3_5_range_125mb", 131072000, start=102400, end=130023424,
                    read_encoding="explicit", note="MS-PCCRC 3.5: cBlocks 448 in last segment")
    yield v2_vector("v2_spec_3_6_whole", SPEC_V2, note="MS-PCCRC 3.6 layout, IIS encoding (0)")
    yield v2_vector("v2_spec_3_6_explicit_length", SPEC_V2, length_encoding="explicit",
                    note="MS-PCCRC 3.6 as printed: ullLengthOfRange 0x2F400")
    yield v2_vector("v2_spec_3_7_range", SPEC_V2, start=102400, end=112640,
                    length_encoding="explicit", note="MS-PCCRC 3.7: length 0x2800")
    yield v2_vector("v2_range_to_end_zero_length", SPEC_V2, start=0xF000 + 0x1000,
                    note="range from inside segment 1 to the end, ullLengthOfRange 0")
    yield v2_vector("v2_range_to_end_explicit_length", SPEC_V2, start=0xF000 + 0x1000,
                    length_encoding="explicit", note="same range, explicit length")
    yield v2_vector("v2_iis_size_99710", [39390, 60320], note="same sizes as the IIS vector")
    yield v2_vector("v2_one_byte", [1])


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    for name, blob, exp in vectors():
        with open(os.path.join(outdir, name + ".bin"), "wb") as f:
            f.write(blob)
        with open(os.path.join(outdir, name + ".json"), "w") as f:
            json.dump(exp, f, indent=1)
            f.write("\n")
        print(f"{name}: {len(blob)} bytes, {len(exp['segments'])} segment(s)")


if __name__ == "__main__":
    main()

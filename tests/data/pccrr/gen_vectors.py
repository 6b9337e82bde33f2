#!/usr/bin/env python3
"""Independent generator for the MS-PCCRR golden vectors in this directory.

Written from PROTOCOL.md section 5 only (struct + hashlib + hmac + the
`cryptography` package); it shares no code with the Rust implementation.
Re-run with `python3 gen_vectors.py` from this directory; output is
deterministic (fixed keys, fixed IV, fixed content).
"""
import hashlib
import hmac
import json
import struct

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

NEGO_REQ, NEGO_RESP, GETBLKLIST, GETBLKS, BLKLIST, BLK, GETSEGLIST, SEGLIST = range(8)
V1_0 = 0x00000001  # minor u16 0, major u16 1
V2_0 = 0x00000002
C2 = "MS_P2P_CACHING\0".encode("utf-16-le")


def protver(msg_type):
    return V2_0 if msg_type >= 6 else V1_0


def pad4(b):
    return b + b"\0" * ((-len(b)) % 4)


def header(msg_type, body_len, crypto):
    return struct.pack(">IIII", protver(msg_type), msg_type, 16 + body_len, crypto)


def request(msg_type, crypto, body):
    return header(msg_type, len(body), crypto) + body


def response(msg_type, crypto, body):
    msg = header(msg_type, len(body), crypto) + body
    return struct.pack(">I", len(msg)) + msg


def seg_id_group(sid):
    return struct.pack(">I", len(sid)) + pad4(sid)


def ranges(rs):
    return struct.pack(">I", len(rs)) + b"".join(struct.pack(">II", i, c) for i, c in rs)


# --- keys: a real v1 derivation chain over a single 64 KiB block --------------
block = bytes((i * 7 + 3) & 0xFF for i in range(65536))
block_hash = hashlib.sha256(block).digest()
hod = hashlib.sha256(block_hash).digest()
ks = hashlib.sha256(b"branchcache pccrr golden vector key").digest()
kp = hmac.new(ks, hod, hashlib.sha256).digest()
hohodk = hmac.new(kp, hod + C2, hashlib.sha256).digest()
iv = bytes(range(16))

enc = Cipher(algorithms.AES(kp[:16]), modes.CBC(iv)).encryptor()
padder = padding.PKCS7(128).padder()
cipher = enc.update(padder.update(block) + padder.finalize()) + enc.finalize()
assert len(cipher) == 65552

request_id = bytes(range(0xA0, 0xB0))
blob = bytes.fromhex("000103020060ea000260ea00")  # MS-PCCRR 2.2.6.1 example (spec-examples.md)
id2 = hashlib.sha256(b"second segment").digest()

vectors = {}


def emit(name, data, **fields):
    with open(name + ".bin", "wb") as f:
        f.write(data)
    vectors[name] = {"len": len(data), **fields}


emit("nego_req", request(NEGO_REQ, 1, struct.pack(">II", V1_0, V2_0)),
     crypto=1, min=V1_0, max=V2_0)
emit("nego_resp", response(NEGO_RESP, 0, struct.pack(">II", V1_0, V2_0)),
     crypto=0, min=V1_0, max=V2_0)
emit("getblklist", request(GETBLKLIST, 1, seg_id_group(hohodk) + ranges([(0, 512)])),
     crypto=1, segment_id=hohodk.hex(), ranges=[[0, 512]])
# The 68-byte GETBLKS iPXE sends: one range of one block, empty VRF.
emit("getblks_ipxe", request(GETBLKS, 1,
                             seg_id_group(hohodk) + ranges([(0, 1)]) + struct.pack(">I", 0)),
     crypto=1, segment_id=hohodk.hex(), ranges=[[0, 1]])
emit("blklist", response(BLKLIST, 0,
                         seg_id_group(hohodk) + ranges([(0, 4), (8, 2)]) + struct.pack(">I", 12)),
     crypto=0, segment_id=hohodk.hex(), ranges=[[0, 4], [8, 2]], next_block_index=12)
blk_body = (seg_id_group(hohodk) + struct.pack(">II", 0, 0)
            + struct.pack(">I", len(cipher)) + pad4(cipher)
            + struct.pack(">I", 0)
            + struct.pack(">I", len(iv)) + iv)
emit("blk_aes128_64k", response(BLK, 1, blk_body),
     crypto=1, segment_id=hohodk.hex(), block_index=0, next_block_index=0,
     block_len=len(block), iv=iv.hex(), kp=kp.hex(), hod=hod.hex(), ks=ks.hex(),
     block_hash=block_hash.hex(), cipher_sha256=hashlib.sha256(cipher).hexdigest(),
     plain_sha256=hashlib.sha256(block).hexdigest())
# "Not available": SizeOfBlock 0, CryptoAlgoId 0, empty VRF and IV.
emit("blk_not_available", response(BLK, 0, seg_id_group(hohodk) + struct.pack(">II", 5, 0)
                                   + struct.pack(">III", 0, 0, 0)),
     crypto=0, segment_id=hohodk.hex(), block_index=5, next_block_index=0)
# Plaintext 5-byte block: shows the ZeroPad after a non-aligned Block field.
emit("blk_plain_odd", response(BLK, 0, seg_id_group(hohodk) + struct.pack(">II", 1, 2)
                               + struct.pack(">I", 5) + pad4(b"hello")
                               + struct.pack(">I", 0) + struct.pack(">I", 0)),
     crypto=0, segment_id=hohodk.hex(), block_index=1, next_block_index=2, block="hello".encode().hex())
emit("getseglist", request(GETSEGLIST, 1, request_id + struct.pack(">I", 2)
                           + seg_id_group(hohodk) + seg_id_group(id2)
                           + struct.pack(">I", len(blob)) + blob),
     crypto=1, request_id=request_id.hex(), segment_ids=[hohodk.hex(), id2.hex()], blob=blob.hex())
emit("seglist", response(SEGLIST, 0, request_id + ranges([(0, 1)])
                         + struct.pack(">I", len(blob)) + blob),
     crypto=0, request_id=request_id.hex(), ranges=[[0, 1]], blob=blob.hex())

with open("manifest.json", "w") as f:
    json.dump(vectors, f, indent=1, sort_keys=True)
    f.write("\n")

#!/usr/bin/env python3
"""Verify a Trailkeep evidence bundle with nothing but the Python standard library.

An independent implementation of docs/evidence-bundle.md for third parties: RFC 6962 / 9162 leaf
hashes and inclusion proofs, C2SP tlog-checkpoints and signed notes (Ed25519 per RFC 8032, from
the RFC's reference code), and the signed trailer. It shares no code with Trailkeep.

    python3 verify_bundle.py BUNDLE PUBKEY_FILE

PUBKEY_FILE holds the server's note verifier key (`GET /v1/log/key`). Prints every problem and
exits 1 if anything does not hold; prints "ok ..." and exits 0 otherwise.
"""
import base64
import hashlib
import json
import sys

# --- Ed25519 verification (RFC 8032, section 6, reference implementation) -----------------------
P = 2**255 - 19
Q = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _add(a, b):
    x = (a[1] - a[0]) * (b[1] - b[0]) % P
    y = (a[1] + a[0]) * (b[1] + b[0]) % P
    c = 2 * a[3] * b[3] * D % P
    d = 2 * a[2] * b[2] % P
    e, f, g, h = y - x, d - c, d + c, y + x
    return (e * f, g * h, f * g, e * h)


def _mul(s, pt):
    acc = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            acc = _add(acc, pt)
        pt = _add(pt, pt)
        s >>= 1
    return acc


def _equal(a, b):
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def _recover_x(y, sign):
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


_GY = 4 * pow(5, P - 2, P) % P
_GX = _recover_x(_GY, 0)
G = (_GX, _GY, 1, _GX * _GY % P)


def _decompress(s):
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % P)


def ed25519_verify(public, msg, sig):
    if len(public) != 32 or len(sig) != 64:
        return False
    a = _decompress(public)
    r = _decompress(sig[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(sig[32:], "little")
    if s >= Q:
        return False
    h = int.from_bytes(hashlib.sha512(sig[:32] + public + msg).digest(), "little") % Q
    return _equal(_mul(s, G), _add(r, _mul(h, a)))


# --- C2SP signed notes and checkpoints -----------------------------------------------------------
def parse_key(text):
    name, keyhash, key = text.strip().split("+", 2)
    raw = base64.b64decode(key)
    if len(raw) != 33 or raw[0] != 1:
        raise ValueError("not an Ed25519 note verifier key")
    want = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if want.hex() != keyhash:
        raise ValueError("key hash does not match the key")
    return name, want, raw[1:]


def open_note(note, key):
    """The body of `note` if `key` signed it, else None."""
    name, keyhash, public = key
    split = note.rfind("\n\n")
    if split < 0:
        return None
    body, sigs = note[: split + 1], note[split + 2 :]
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            return None
        signer, _, b64 = line[2:].partition(" ")
        blob = base64.b64decode(b64)
        if signer == name and blob[:4] == keyhash and ed25519_verify(public, body.encode(), blob[4:]):
            return body
    return None


# --- RFC 6962 / 9162 Merkle trees ----------------------------------------------------------------
def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162, section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# --- The bundle ----------------------------------------------------------------------------------
def verify_bundle(path, key):
    problems, checkpoints, digest = [], {}, hashlib.sha256()
    events = proven = 0
    ended = False
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if ended:
                problems.append(f"line {n}: content after the trailer")
                break
            try:
                e = json.loads(raw)
                kind = e.get("type")
            except (ValueError, AttributeError) as err:
                problems.append(f"line {n}: not a bundle entry ({err})")
                digest.update(raw)
                continue
            if kind == "header":
                if n != 1 or e["format"] != "trailkeep-evidence-bundle" or e["version"] != 1:
                    problems.append(f"line {n}: unexpected header")
            elif kind == "checkpoint":
                body = open_note(e["checkpoint"], key)
                if body is None:
                    problems.append(f"line {n}: checkpoint of {e['account']} not signed by the key")
                else:
                    origin, size, root = body.split("\n")[:3]
                    if not origin.endswith("/" + e["account"]):
                        problems.append(f"line {n}: checkpoint of another log ({origin})")
                    checkpoints[e["account"]] = (int(size), base64.b64decode(root))
            elif kind == "event":
                if e["seq"] != events:
                    problems.append(f"line {n}: event #{e['seq']} where #{events} was expected")
                events += 1
                cp = checkpoints.get(e["account"])
                data = base64.b64decode(e["bytes"])
                proof = [base64.b64decode(h) for h in e["proof"]]
                if cp and verify_inclusion(e["index"], cp[0], leaf_hash(data), proof, cp[1]):
                    proven += 1
                else:
                    problems.append(f"line {n}: event {e['account']}/{e['index']} is not proven")
            elif kind == "end":
                ended = True
                body = open_note(e["signature"], key)
                want = f"trailkeep evidence bundle v1\nevents {events}\nsha256 {digest.hexdigest()}\n"
                if body != want:
                    problems.append(f"line {n}: the signed trailer does not match the bundle")
                continue
            else:
                problems.append(f"line {n}: unknown entry {kind!r}")
            digest.update(raw)
    if not ended:
        problems.append("no trailer")
    return problems, events, proven, checkpoints


def main():
    bundle, key_file = sys.argv[1], sys.argv[2]
    with open(key_file, encoding="utf-8") as f:
        key = parse_key(f.read())
    try:
        problems, events, proven, checkpoints = verify_bundle(bundle, key)
    except (ValueError, KeyError, TypeError) as err:
        problems, events, proven, checkpoints = [f"malformed entry: {err!r}"], 0, 0, {}
    for p in problems:
        print("FAIL", p)
    if problems:
        sys.exit(1)
    logs = ", ".join(f"{a}@{s}" for a, (s, _) in sorted(checkpoints.items()))
    print(f"ok {proven} of {events} events proven against signed checkpoints ({logs}); trailer holds")


if __name__ == "__main__":
    main()

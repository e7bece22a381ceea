// Checking an inclusion proof in the browser, sharing no code with the server: RFC 8785 (JCS)
// canonical bytes of the event, RFC 6962 leaf and node hashes with WebCrypto SHA-256, the
// RFC 9162 inclusion path, and the C2SP signed note of the checkpoint with WebCrypto Ed25519.

const enc = new TextEncoder();

/** RFC 8785 canonical JSON of a parsed value (keys sorted by UTF-16 code units). */
export function jcs(v) {
  if (v === null || typeof v !== "object") {
    if (typeof v === "number" && !Number.isFinite(v)) throw new Error("not a JSON number");
    return JSON.stringify(v);
  }
  if (Array.isArray(v)) return `[${v.map(jcs).join(",")}]`;
  const keys = Object.keys(v).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${keys.map((k) => `${JSON.stringify(k)}:${jcs(v[k])}`).join(",")}}`;
}

async function sha256(...parts) {
  const len = parts.reduce((n, p) => n + p.length, 0);
  const buf = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    buf.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
}

export const leafHash = (bytes) => sha256(Uint8Array.of(0), bytes);
export const nodeHash = (l, r) => sha256(Uint8Array.of(1), l, r);

export function b64decode(s) {
  const bin = atob(s.trim());
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

export function b64encode(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

export const hex = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The root that `proof` leads to from `leaf` at `index` in a tree of `size` (RFC 9162 §2.1.3.2), or null. */
export async function rootFromInclusion(index, size, leaf, proof) {
  if (index >= size) return null;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

/** A note verifier key `name+hexhash+base64(0x01‖pubkey)`, its hash checked. */
export async function parseVerifierKey(text) {
  const t = text.trim();
  const a = t.indexOf("+");
  const b = t.indexOf("+", a + 1);
  if (a < 1 || b < 0) throw new Error("the verifier key is not name+hash+key");
  const name = t.slice(0, a);
  const keyHash = t.slice(a + 1, b);
  const raw = b64decode(t.slice(b + 1));
  if (raw.length !== 33 || raw[0] !== 1) throw new Error("the verifier key is not an Ed25519 note key");
  const hash = (await sha256(enc.encode(`${name}\n`), raw)).slice(0, 4);
  if (hex(hash) !== keyHash) throw new Error("the verifier key's hash does not match the key");
  return { name, hash, publicKey: raw.slice(1) };
}

/** The checkpoint body lines: origin, size, root. */
export function parseCheckpoint(note) {
  const split = note.lastIndexOf("\n\n");
  const body = split < 0 ? note : note.slice(0, split + 1);
  const [origin, size, root] = body.split("\n");
  if (!/^\d+$/.test(size || "")) throw new Error("the checkpoint has no tree size");
  return { origin, size: Number(size), root: b64decode(root || ""), rootB64: root, body };
}

/** Whether WebCrypto here can verify Ed25519 signatures. */
export async function ed25519Supported() {
  try {
    await crypto.subtle.importKey("raw", new Uint8Array(32).fill(1), { name: "Ed25519" }, false, ["verify"]);
    return true;
  } catch {
    return false;
  }
}

/**
 * Checks that `key` signed `note`: "verified", "invalid", or "unsupported" (no Ed25519 in this
 * browser's WebCrypto).
 */
export async function verifyNote(note, key) {
  const split = note.lastIndexOf("\n\n");
  if (split < 0) return "invalid";
  const body = enc.encode(note.slice(0, split + 1));
  const lines = note.slice(split + 2).split("\n").filter(Boolean);
  let cryptoKey;
  try {
    cryptoKey = await crypto.subtle.importKey("raw", key.publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch {
    return "unsupported";
  }
  for (const line of lines) {
    if (!line.startsWith("\u2014 ")) return "invalid";
    const [name, b64] = line.slice(2).split(" ");
    if (name !== key.name) continue;
    const blob = b64decode(b64 || "");
    if (blob.length !== 68 || !equal(blob.slice(0, 4), key.hash)) continue;
    if (await crypto.subtle.verify({ name: "Ed25519" }, cryptoKey, blob.slice(4), body)) return "verified";
  }
  return "invalid";
}

/**
 * Verifies `item` (with its `proof`) against the verifier key text. Returns the steps taken, each
 * {ok: true|false|null, text}, and the overall verdict.
 */
export async function verifyItem(item, keyText) {
  const steps = [];
  const proof = item.proof;
  const key = await parseVerifierKey(keyText);
  steps.push({ ok: true, text: `Verifier key “${key.name}” parsed; its key hash matches.` });
  const cp = parseCheckpoint(proof.checkpoint);
  const bytes = enc.encode(jcs(item.event));
  const leaf = await leafHash(bytes);
  steps.push({ ok: true, text: `Leaf hash SHA-256(0x00 ‖ JCS(event)) over ${bytes.length} bytes: ${hex(leaf)}` });
  const sizeOk = cp.size === proof.size;
  const root = await rootFromInclusion(item.index, proof.size, leaf, proof.hashes.map(b64decode));
  const rootOk = sizeOk && root !== null && equal(root, cp.root);
  steps.push({ ok: rootOk, text: rootOk
    ? `Event #${item.index} leads through ${proof.hashes.length} proof hashes to the checkpoint's root ${cp.rootB64} (tree size ${cp.size}).`
    : `The proof does NOT lead to the checkpoint's root (tree size ${cp.size}): the event or the proof was changed.` });
  const sig = await verifyNote(proof.checkpoint, key);
  if (sig === "verified") steps.push({ ok: true, text: `The checkpoint's Ed25519 signature by “${key.name}” is valid (checked with WebCrypto).` });
  else if (sig === "unsupported") steps.push({ ok: null, text: "This browser cannot check Ed25519 signatures: only the hash path was checked, not the checkpoint's signature." });
  else steps.push({ ok: false, text: `The checkpoint is NOT signed by “${key.name}”.` });
  const verdict = steps.some((s) => s.ok === false) ? "failed" : sig === "unsupported" ? "hash-only" : "verified";
  return { steps, verdict, checkpoint: cp };
}

"""Model files: read and check a VW model's header in Python, stamp, pack and unpack.

VW obeys the option string stored in a model's header when it loads the model,
so the header is read here, before any VW sees the file, and its options go
through the allow-list of :mod:`vwargs`.  The layout (VW 8.0.3 and later,
``save_load_header`` in VW's parse_regressor.cc) is, little-endian::

    u32 n, version[n]          "9.11.9\\0"
    u32 n, id[n]               user id (VW adds it to the options as --id)
    'm', f32 min label, f32 max label, u32 bits, u32 lda
    u32 k, k x 3 bytes         --ngram specs (added to the options)
    u32 k, k x 3 bytes         --skips specs (added to the options)
    u32 n, options[n]          the kept options, NUL-terminated
    u32 4, u32 checksum        MurmurHash3 chained over every read after the version

and then each reduction's state, the weights last, read until the end of the
file.  So VW cannot tell a file cut between two weights from a smaller model:
every model banditloop saves carries the SHA-256 of everything after its
header in the id field (``banditloop:sha256:<hex>``), which :func:`verify`
checks.  Models from elsewhere are compared with what VW writes back after
loading them (vwcheck.py).

Signed archives (``GET /model?signed=true``) are a zip of ``model.vw``, its
SHA-512 digest and an empty ``signer.der``; their sizes are read from the zip's
central directory and bounded before anything is decompressed.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace

import mmh3

from . import vwargs
from .errors import BadRequest, InvalidPolicy

MAX_MODEL_BYTES = 512 << 20
MAX_ZIP_RATIO = 100  # a real model compresses a few times; a zip bomb thousands
MAX_SIGNER_BYTES = 64 << 10
MEMBERS = ("model.vw", "sha512_signature.bin", "signer.der")
STAMP = "banditloop:sha256:"
OLDEST = (8, 0, 3)  # the first version with the id field and the chained checksum
_ID = re.compile(r"^[A-Za-z0-9_.:+=@-]{1,128}$")
_VERSION = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")
FORMAT, SIGNATURE = "InvalidModelImportFormat", "InvalidModelImportSignature"


def refused(message: str, code: str = FORMAT) -> BadRequest:
    return BadRequest(message, code)


@dataclass(frozen=True)
class Header:
    """A model file's header as VW reads it; ``end`` is where the reductions' state starts."""

    version: str
    id: str
    min_label: float
    max_label: float
    bits: int
    lda: int
    ngrams: tuple[bytes, ...]
    skips: tuple[bytes, ...]
    options: str
    checksum: int
    end: int

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.version.split("."))

    def pairs(self) -> list[vwargs.Pair]:
        """The header's options, allow-listed (refused as a model format error)."""
        try:
            return vwargs.parse(self.options, "The model file's")
        except InvalidPolicy as ex:
            raise refused(ex.message) from None


class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.pos = 0
        self.hash: int | None = None  # chained MurmurHash3 once VW starts hashing

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.blob):
            raise refused("Not a usable model file: it ends inside its header.")
        out = self.blob[self.pos : self.pos + n]
        self.pos += n
        if self.hash is not None:
            self.hash = mmh3.hash(out, self.hash, signed=False)
        return out

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def f32(self) -> float:
        return float(struct.unpack("<f", self.take(4))[0])

    def text(self, limit: int) -> str:
        n = self.u32()
        if n > limit:
            raise refused("Not a usable model file: a header field is too long.")
        raw = self.take(n)
        if not raw:
            return ""
        if not raw.endswith(b"\x00") or b"\x00" in raw[:-1]:
            raise refused("Not a usable model file: a header text is not terminated.")
        try:
            return raw[:-1].decode("ascii")
        except UnicodeDecodeError:
            raise refused("Not a usable model file: a header text is not ASCII.") from None


def read_header(blob: bytes) -> Header:
    """The header of a model file; refuses anything VW's reader would not take, and a
    checksum that does not match."""
    r = _Reader(blob)
    version = r.text(512)
    match = _VERSION.match(version)
    if not match:
        raise refused("Not a usable model file: it does not start with a VW version.")
    if tuple(int(x) for x in match.groups()) < OLDEST:
        raise refused(f"Models of VW {version} are too old: VW 8.0.3 or later is needed.")
    r.hash = 0
    ident = r.text(512)
    if r.take(1) != b"m":
        raise refused("Not a usable model file: VW's model marker is missing.")
    min_label, max_label, bits, lda = r.f32(), r.f32(), r.u32(), r.u32()
    ngrams = tuple(r.take(3) for _ in range(_count(r)))
    skips = tuple(r.take(3) for _ in range(_count(r)))
    options = r.text(1 << 20)
    expected = r.hash
    r.hash = None
    if r.u32() != 4 or r.u32() != expected:
        raise refused("Not a usable model file: its header checksum does not match.")
    return Header(
        version, ident, min_label, max_label, bits, lda, ngrams, skips, options, expected, r.pos
    )


def _count(r: _Reader) -> int:
    n = r.u32()
    if n > 64:
        raise refused("Not a usable model file: too many n-gram specs.")
    return n


def header_bytes(h: Header) -> bytes:
    """The header as VW writes it, with the checksum recomputed over the same reads."""
    pieces: list[bytes] = []

    def text(s: str) -> None:
        raw = s.encode("ascii") + b"\x00"
        pieces.extend((struct.pack("<I", len(raw)), raw))

    text(h.id)
    pieces.append(b"m")
    pieces += [struct.pack("<f", h.min_label), struct.pack("<f", h.max_label)]
    pieces += [struct.pack("<I", h.bits), struct.pack("<I", h.lda)]
    for specs in (h.ngrams, h.skips):
        pieces.append(struct.pack("<I", len(specs)))
        pieces += specs
    text(h.options)
    checksum = 0
    for piece in pieces:
        checksum = mmh3.hash(piece, checksum, signed=False)
    version = h.version.encode("ascii") + b"\x00"
    head = struct.pack("<I", len(version)) + version
    return head + b"".join(pieces) + struct.pack("<II", 4, checksum)


def digest_of(blob: bytes, header: Header) -> str:
    return hashlib.sha256(memoryview(blob)[header.end :]).hexdigest()


def stamp(blob: bytes) -> bytes:
    """The model with the SHA-256 of its body in the header's id field."""
    h = read_header(blob)
    stamped = replace(h, id=STAMP + digest_of(blob, h))
    return header_bytes(stamped) + blob[h.end :]


def verify(blob: bytes) -> Header:
    """Check a model file before any VW loads it: a sane header with a matching
    checksum, no options but allow-listed learning options, nothing VW would add to
    them beyond that, and (for banditloop's models) the stamped digest of the rest."""
    if not blob:
        raise refused("The request has no model file.")
    if len(blob) > MAX_MODEL_BYTES:
        raise refused("The model file is too large.")
    h = read_header(blob)
    h.pairs()
    if h.id.startswith(STAMP):
        if h.id[len(STAMP) :] != digest_of(blob, h):
            raise refused(
                "The model file is damaged or truncated: its content does not match the "
                "digest it was saved with."
            )
    elif h.id and not _ID.match(h.id):
        raise refused("The model file's id is not a plain name.")
    if h.lda or h.ngrams or h.skips:
        raise refused("The model file uses --lda, --ngram or --skips, which are not allowed.")
    if not 1 <= h.bits <= vwargs.MAX_BITS:
        raise refused(f"The model file's weight table has {h.bits} bits (at most 28).")
    if not (math.isfinite(h.min_label) and math.isfinite(h.max_label)):
        raise refused("Not a usable model file: its label range is not finite.")
    return h


def check_policy(h: Header, policy: Sequence[vwargs.Pair]) -> None:
    """Refuse a model whose options differ from what the loop's policy gives a model
    (``policy``: the options VW keeps for it, read from an empty model)."""
    want_bits = vwargs.bits(policy)
    if vwargs.canonical(h.pairs()) != vwargs.canonical(policy) or h.bits != want_bits:
        raise refused(
            "The model was trained with other options than the loop's policy: the model "
            f"has `{h.options.strip()}` (-b {h.bits}), the policy gives "
            f"`{vwargs.show(p for p in policy if p[0] != '--bit_precision')}` "
            f"(-b {want_bits}). Set the policy to the model's options first "
            "(PUT /configurations/policy), then import the model."
        )


# -- archives --------------------------------------------------------------------


def signed_archive(blob: bytes) -> bytes:
    """A zip of the model with its SHA-512 digest (``signer.der`` empty: no certificate)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.vw", blob)
        zf.writestr("sha512_signature.bin", hashlib.sha512(blob).digest())
        zf.writestr("signer.der", b"")
    return out.getvalue()


def unpack(body: bytes) -> bytes:
    """The model file of an upload: raw VW bytes, or model.vw of a signed archive whose
    members are all there, within their sizes, and whose digest matches."""
    if not body:
        raise refused("The request has no model file.")
    if not body.startswith(b"PK\x03\x04"):
        return body
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            _check_members(zf.infolist())
            signer = zf.read(infos["signer.der"])
            digest = zf.read(infos["sha512_signature.bin"])
            blob = zf.read(infos["model.vw"])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as ex:
        raise refused(f"Not a model archive: {ex}") from None
    if signer:
        raise refused(
            "The archive is signed with a certificate, which banditloop cannot verify: "
            "import its model.vw as a plain model file instead.",
            SIGNATURE,
        )
    if digest != hashlib.sha512(blob).digest():
        raise refused("The model archive's digest does not match model.vw.", SIGNATURE)
    return blob


def _check_members(infos: list[zipfile.ZipInfo]) -> None:
    names = [i.filename for i in infos]
    if sorted(names) != sorted(MEMBERS):
        missing = sorted(set(MEMBERS) - set(names))
        extra = sorted(set(names) - set(MEMBERS))
        raise refused(
            f"A model archive holds exactly {', '.join(MEMBERS)}"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unexpected: {', '.join(extra[:5])}" if extra else "")
            + ("; duplicated members" if len(names) != len(set(names)) else "")
            + ".",
            SIGNATURE if "model.vw" in names and missing else FORMAT,
        )
    limits = {
        "model.vw": MAX_MODEL_BYTES,
        "sha512_signature.bin": 64,
        "signer.der": MAX_SIGNER_BYTES,
    }
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise refused(f"Archive member {info.filename} uses an unsupported compression.")
        if info.file_size > limits[info.filename]:
            raise refused(f"Archive member {info.filename} is too large ({info.file_size} bytes).")
        ratio = info.file_size // max(1, info.compress_size)
        if info.file_size > (1 << 20) and ratio > MAX_ZIP_RATIO:
            raise refused(f"Archive member {info.filename} would grow {ratio} times when unpacked.")

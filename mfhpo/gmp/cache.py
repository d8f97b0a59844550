"""On-disk cache of fingerprints, safe under concurrent writers (several Dask worker processes).

Layout: ``<root>/<setting key>/<structure hash>.<dtype>.<fp|fpd>[.<variant>].bin`` plus
``setting.json`` per setting folder for humans; ``variant`` names the featurizer layout that made
the entry when it is not the greedy one (layouts differ in the last bits: "b" = blocked). A ``.bin`` entry is one flat file: an 8-byte magic, an 8-byte header
length, a small JSON header (array name -> dtype, shape, byte offset) and the raw arrays (``fp`` and,
with derivatives, ``pair_i``, ``pair_j``, ``dfp``, stored in the requested dtype), 64-byte aligned.
Reading returns zero-copy ``torch.from_numpy`` views of one buffer: small entries (<= 256 KiB) are
read, larger ones memory-mapped (private, copy-on-write: no up-front read, pages come
from the page cache when used); a request without derivatives served from a derivative entry
maps only the ``fp`` bytes. Writes go to a unique temporary file in the same folder and are
published with ``os.replace`` (atomic on POSIX), so a reader sees either nothing or a complete file;
two workers computing the same entry simply both write identical content. Truncated or corrupt
entries are treated as misses (and recomputed).
"""

from __future__ import annotations

import functools
import json
import math
import mmap
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from mfhpo.atomic import atomic_open
from mfhpo.data import structure_hash

MAGIC = b"MFGMPC1\n"
_ALIGN = 64
_NAMES = ("fp", "pair_i", "pair_j", "dfp")


def _pad(n: int) -> int:
    return (-n) % _ALIGN


class FeatureCache:
    """Fingerprint cache keyed by (setting.key(), structure_hash(atoms), dtype, derivatives, variant)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._root_str = str(self.root)
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._keys: dict = {}  # id(setting) -> (setting, key): setting.key() hashes every density
        self._made: set = set()

    # ----------------------------------------------------------------------------------------
    def _setting_key(self, setting) -> str:
        hit = self._keys.get(id(setting))
        if hit is not None and hit[0] is setting:
            return hit[1]
        key = setting.key()
        if len(self._keys) > 64:
            self._keys.clear()
        self._keys[id(setting)] = (setting, key)
        return key

    def path(self, setting, atoms, dtype: torch.dtype, derivatives: bool, variant: str = "") -> Path:
        return Path(self._path(self._setting_key(setting), structure_hash(atoms), dtype, derivatives, variant))

    def _path(self, skey: str, shash: str, dtype: torch.dtype, derivatives: bool, variant: str = "") -> str:
        # plain strings: a hit costs little more than the open, so pathlib's overhead showed
        dt = str(dtype).replace("torch.", "")
        tag = f".{variant}" if variant else ""
        return f"{self._root_str}/{skey}/{shash}.{dt}.{'fpd' if derivatives else 'fp'}{tag}.bin"

    def get(self, setting, atoms, dtype: torch.dtype, derivatives: bool, variant: str = ""):
        """Cached :class:`~mfhpo.gmp.featurizer.Features` (on the CPU) or None.

        A derivative entry also serves a request without derivatives.
        """
        from mfhpo.gmp.featurizer import Features

        skey, shash = self._setting_key(setting), structure_hash(atoms)
        for stored_dfp in ((True,) if derivatives else (False, True)):
            want_dfp = derivatives
            arrays = _read(self._path(skey, shash, dtype, stored_dfp, variant), _NAMES if want_dfp else ("fp",))
            if arrays is None:
                continue
            fp = arrays["fp"]
            if fp.ndim != 2 or fp.shape[0] != len(atoms):
                continue
            if want_dfp:
                f = Features(fp, arrays["pair_i"], arrays["pair_j"], arrays["dfp"])
            else:
                f = Features(fp)
            self.hits += 1
            return f
        self.misses += 1
        return None

    def put(self, setting, atoms, dtype: torch.dtype, derivatives: bool, features, variant: str = "") -> Path:
        skey = self._setting_key(setting)
        p = Path(self._path(skey, structure_hash(atoms), dtype, derivatives, variant))
        folder = p.parent
        if folder not in self._made:
            if not folder.exists():
                folder.mkdir(parents=True, exist_ok=True)
            meta = folder / "setting.json"
            if not meta.exists():
                self._atomic_write_text(meta, json.dumps(setting.to_dict(), indent=1))
            self._made.add(folder)
        arrays = {"fp": features.fp}
        if derivatives:
            arrays.update(pair_i=features.pair_i, pair_j=features.pair_j, dfp=features.dfp)
        arrays = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in arrays.items()}
        header, off = {}, 0
        for k, a in arrays.items():
            header[k] = [a.dtype.str, list(a.shape), off]
            off += a.nbytes + _pad(a.nbytes)
        hb = json.dumps(header).encode()
        hb += b" " * _pad(len(MAGIC) + 8 + len(hb))
        with atomic_open(p, fsync=False) as fh:
            fh.write(MAGIC + struct.pack("<Q", len(hb)) + hb)
            for a in arrays.values():
                fh.write(memoryview(a).cast("B"))
                fh.write(b"\0" * _pad(a.nbytes))
        self.writes += 1
        return p

    @staticmethod
    def _atomic_write_text(path: Path, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes}

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r}, hits={self.hits}, misses={self.misses})"


_SMALL = 1 << 14  # the first read; entries up to this size need no other
_MAP = 1 << 18  # entries larger than this are memory-mapped, smaller ones read


@functools.lru_cache(maxsize=1024)
def _specs(header: bytes, names: tuple):
    """([(name, dtype, shape, offset, nbytes)], bytes used) from an entry's JSON header, or None
    (headers repeat: same shapes, so this is cached)."""
    h = json.loads(header)
    if any(n not in h for n in names):
        return None
    specs, end = [], 0
    for n in names:
        dt = np.dtype(h[n][0])
        shape, off = tuple(int(x) for x in h[n][1]), int(h[n][2])
        nbytes = dt.itemsize * math.prod(shape)
        specs.append((n, dt, shape, off, nbytes))
        end = max(end, off + nbytes)
    return specs, end


def _read(path: str | Path, names) -> dict | None:
    """The arrays ``names`` of a cache entry as tensors, or None if missing/incomplete/corrupt.

    Entries up to 256 KiB (e.g. fingerprints without derivatives) are read (one call up to 16 KiB;
    plain ``os`` calls: a hit costs little more than the system calls). Larger ones are
    memory-mapped copy-on-write (private): no read or copy up front, the pages come from the page
    cache when used, and writes to the tensors never reach the file. Published entries are
    immutable (replaced atomically, never rewritten in place), so mapping is safe."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        first = bytearray(_SMALL)
        got = os.readv(fd, [first])
        nh = len(MAGIC) + 8
        if got < nh or first[:len(MAGIC)] != MAGIC:
            return None
        (hlen,) = struct.unpack_from("<Q", first, len(MAGIC))
        if hlen > 1 << 20:
            return None
        hb = bytes(first[nh:nh + hlen]) if nh + hlen <= got else os.pread(fd, hlen, nh)
        parsed = _specs(hb, tuple(names))
        if parsed is None:
            return None
        specs, used = parsed
        base = nh + hlen
        end = base + used
        if end <= got:
            buf = first
        elif os.fstat(fd).st_size < end:
            return None  # truncated
        else:
            buf = _read_rest(fd, first, got, end) if end <= _MAP else _map_or_read(fd, end)
            if buf is None:
                return None
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return None
    finally:
        os.close(fd)
    buf = np.frombuffer(buf, dtype=np.uint8)  # zero-copy tensors on the (writable, private) buffer
    return {n: torch.from_numpy(buf[base + off:base + off + nbytes].view(dt).reshape(shape))
            for n, dt, shape, off, nbytes in specs}


def _read_rest(fd: int, first: bytearray, got: int, end: int):
    """The first ``end`` bytes of a file of which ``first[:got]`` was read already."""
    buf = np.empty(end, dtype=np.uint8)
    buf[:got] = np.frombuffer(first, dtype=np.uint8, count=got)
    return buf if _read_into(fd, buf, got) else None


def _read_into(fd: int, buf: np.ndarray, got: int) -> bool:
    """Fill ``buf[got:]`` from the file at offset ``got``; False if the file ends first."""
    mv = memoryview(buf)
    while got < len(buf):
        k = os.preadv(fd, [mv[got:]], got)
        if not k:
            return False
        got += k
    return True


def _map_or_read(fd: int, end: int):
    """The first ``end`` bytes of an open file: memory-mapped copy-on-write, or read if mapping fails."""
    try:
        return np.frombuffer(mmap.mmap(fd, end, access=mmap.ACCESS_COPY), dtype=np.uint8)
    except (OSError, ValueError):  # no mmap on this file system: one read
        buf = np.empty(end, dtype=np.uint8)
        return buf if _read_into(fd, buf, 0) else None

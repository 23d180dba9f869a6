"""Multiple sequence alignments in the files people have: A3M, aligned FASTA and Stockholm.

Every reader returns an :class:`Msa`: the rows aligned to the query (row 0; upper-case letters
and ``-``, all of the query's length L) and the deletion matrix ``[N, L]``, the number of residues
each row has inserted just before each query column, as AlphaFold's ``alphafold/data/parsers.py``
(Jumper et al. 2021, Suppl. §1.2.2) computes them:

- A3M (HHblits; Remmert et al. 2012): upper-case letters and ``-`` are the query's columns,
  lower-case letters insertions counted before the next column (``parse_a3m``); ``.`` (a gap in
  an insertion, A2M's spelling) is dropped;
- Stockholm (HMMER, Pfam): ``#`` markup and ``//`` ignored, wrapped blocks concatenated by name,
  the columns where the query has a gap dropped and the residues other rows have there counted as
  deletions (``parse_stockholm``); ``.`` is a gap as ``-`` is, and kept residues are upper-cased;
- aligned FASTA (and A2M): rows of equal width, the query's gap columns treated as in Stockholm.

Where AlphaFold's parsers crash or pass on nonsense, these raise one ``ValueError`` naming the
file and line: a letter outside A-Z (HHblits folds B, Z, U, J, O; see
:mod:`tatlas.data.proteins.residues`), rows of different widths, an empty file, no sequences.
:func:`format_a3m` writes A3M; inserted residues are not kept, so they are written as ``x``.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

import numpy as np

from tatlas.data.proteins.residues import decode, encode

_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALLOWED = _LETTERS | {c.lower() for c in _LETTERS} | {"-", "."}
FORMATS = {".a3m": "a3m", ".sto": "stockholm", ".stockholm": "stockholm", ".stk": "stockholm", ".fasta": "fasta",
           ".fa": "fasta", ".afa": "fasta", ".a2m": "fasta", ".aln": "fasta", ".fas": "fasta"}


@dataclass(frozen=True, kw_only=True, eq=False)
class Msa:
    """An alignment to its query: ``sequences`` (N rows of L upper-case letters or ``-``; row 0
    the query), ``deletion_matrix`` int64 ``[N, L]`` and one description per row."""

    sequences: tuple[str, ...]
    deletion_matrix: np.ndarray
    descriptions: tuple[str, ...]

    @property
    def depth(self) -> int:
        return len(self.sequences)

    @property
    def length(self) -> int:
        return len(self.sequences[0])

    def to_array(self) -> np.ndarray:
        """Residue indices ``[N, L]`` int64 in AlphaFold's order (20 = X, 21 = gap)."""
        return np.stack([encode(s) for s in self.sequences]) if self.sequences else np.zeros((0, 0), np.int64)


def _check_letters(text: str, source: str, line: int) -> None:
    bad = next((c for c in text if c not in _ALLOWED), None)
    if bad is not None:
        raise ValueError(f"{source}, line {line}: unknown residue {bad!r}: "
                         f"expected letters A-Z (a-z for insertions), '-' or '.'")


def _make(rows: list[tuple[str, str, int]], dels: list[list[int]], source: str, what: str) -> Msa:
    """rows: (description, aligned sequence, line of its header)."""
    if not rows:
        raise ValueError(f"{source}: no sequences: expected {what}")
    width = len(rows[0][1])
    if width == 0:
        raise ValueError(f"{source}, line {rows[0][2]}: the query {rows[0][0]!r} has no residues")
    for desc, seq, line in rows:
        if len(seq) != width:
            raise ValueError(f"{source}, line {line}: sequence {desc!r} has {len(seq)} aligned columns, "
                             f"expected {width} (the query's)")
    dels = np.array(dels, dtype=np.int64).reshape(len(rows), width)
    return Msa(sequences=tuple(r[1] for r in rows), deletion_matrix=dels, descriptions=tuple(r[0] for r in rows))


def _fasta_records(text: str, source: str) -> list[tuple[str, str, int]]:
    """(description, raw sequence, header line) per record, as ``parsers.parse_fasta`` reads them."""
    if not text.strip():
        raise ValueError(f"{source}: empty file: expected an alignment")
    records: list[list] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith(">"):
            records.append([line[1:], [], number])
        elif line:
            if not records:
                raise ValueError(f"{source}, line {number}: sequence before the first '>' header")
            _check_letters(line, source, number)
            records[-1][1].append(line)
    return [(d, "".join(parts), n) for d, parts, n in records]


def parse_a3m(text: str, *, source: str = "<a3m>") -> Msa:
    """A3M text -> :class:`Msa` (``parsers.parse_a3m``: lower case = insertions before the next
    column; ``.`` dropped)."""
    rows, dels = [], []
    for desc, seq, line in _fasta_records(text, source):
        aligned, vec, count = [], [], 0
        for c in seq:
            if c == ".":
                continue
            if c.islower():
                count += 1
            else:
                aligned.append(c)
                vec.append(count)
                count = 0
        if not aligned:
            raise ValueError(f"{source}, line {line}: sequence {desc!r} has no aligned columns")
        rows.append((desc, "".join(aligned), line))
        dels.append(vec)
    return _make(rows, dels, source, "'>' records")


def _drop_query_gaps(rows: list[tuple[str, str, int]], source: str, what: str) -> Msa:
    """Keep the query's residue columns; count other rows' residues in its gap columns as
    deletions before the next kept column (``parsers.parse_stockholm``)."""
    if not rows:
        raise ValueError(f"{source}: no sequences: expected {what}")
    width = len(rows[0][1])
    for desc, seq, line in rows:
        if len(seq) != width:
            raise ValueError(f"{source}, line {line}: sequence {desc!r} is {len(seq)} columns wide, "
                             f"expected {width} (the query's)")
    keep = [c not in "-." for c in rows[0][1]]
    out, dels = [], []
    for desc, seq, line in rows:
        aligned, vec, count = [], [], 0
        for k, c in zip(keep, seq):
            gap = c in "-."
            if k:
                aligned.append("-" if gap else c.upper())
                vec.append(count)
                count = 0
            elif not gap:
                count += 1
        out.append((desc, "".join(aligned), line))
        dels.append(vec)
    return _make(out, dels, source, what)


def parse_fasta(text: str, *, source: str = "<fasta>") -> Msa:
    """Aligned FASTA (or A2M) text -> :class:`Msa`: rows of equal width; columns where the query
    has a gap dropped, residues there counted as deletions."""
    return _drop_query_gaps(_fasta_records(text, source), source, "'>' records")


def parse_stockholm(text: str, *, source: str = "<stockholm>") -> Msa:
    """Stockholm text -> :class:`Msa` (``parsers.parse_stockholm``: markup skipped, blocks joined
    by name, query gap columns dropped and counted as deletions)."""
    if not text.strip():
        raise ValueError(f"{source}: empty file: expected an alignment")
    names: dict[str, list] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "//")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{source}, line {number}: expected '<name> <aligned sequence>', got {len(parts)} fields")
        name, seq = parts
        _check_letters(seq, source, number)
        names.setdefault(name, ["", number])[0] += seq
    return _drop_query_gaps([(n, s, line) for n, (s, line) in names.items()], source, "'<name> <sequence>' lines")


def read_msa(path: str | pathlib.Path, *, format: str | None = None) -> Msa:
    """Read an alignment file; ``format`` (``"a3m"``, ``"fasta"``, ``"stockholm"``) defaults to
    the one its suffix names (:data:`FORMATS`)."""
    path = pathlib.Path(path)
    fmt = format or FORMATS.get(path.suffix.lower())
    parsers = {"a3m": parse_a3m, "fasta": parse_fasta, "stockholm": parse_stockholm}
    if fmt not in parsers:
        raise ValueError(f"{path}: format: expected one of {sorted(parsers)} or a suffix in {sorted(FORMATS)}, "
                         f"got {fmt or path.suffix!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text alignment (byte {e.start} is not UTF-8)") from None
    return parsers[fmt](text, source=str(path))


def format_a3m(msa: Msa, *, width: int = 0) -> str:
    """A3M text of ``msa``: each deletion count becomes that many ``x`` before its column (the
    inserted residues are not kept); ``width > 0`` wraps the sequence lines."""
    out = []
    for desc, seq, dels in zip(msa.descriptions, msa.sequences, msa.deletion_matrix):
        line = "".join("x" * int(d) + c for c, d in zip(seq, dels))
        chunks = [line[k : k + width] for k in range(0, len(line), width)] if width > 0 else [line]
        out.append(f">{desc}\n" + "\n".join(chunks))
    return "\n".join(out) + "\n"


def write_a3m(msa: Msa, path: str | pathlib.Path) -> None:
    """Write ``msa`` as A3M to ``path``."""
    pathlib.Path(path).write_text(format_a3m(msa))


def msa_from_arrays(msa: np.ndarray, deletion_matrix: np.ndarray | None = None, *,
                    descriptions: tuple[str, ...] | None = None) -> Msa:
    """An :class:`Msa` from residue indices ``[N, L]`` (AlphaFold order) and deletions ``[N, L]``."""
    msa = np.asarray(msa)
    dels = np.zeros_like(msa) if deletion_matrix is None else np.asarray(deletion_matrix, dtype=np.int64)
    if msa.ndim != 2 or dels.shape != msa.shape:
        raise ValueError(f"msa and deletion_matrix: expected the same [N, L], "
                         f"got {list(msa.shape)} and {list(dels.shape)}")
    descriptions = descriptions or tuple(f"seq{i}" if i else "query" for i in range(len(msa)))
    return Msa(sequences=tuple(decode(row) for row in msa), deletion_matrix=dels.astype(np.int64),
               descriptions=tuple(descriptions))

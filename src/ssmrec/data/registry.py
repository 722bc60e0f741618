"""Named datasets: where to find them locally, where to download them from, and their checksums.

Resolution order for a name: ``$SSMREC_DATA/<name or alias>/`` (a folder holding the entry's files),
then the cache's ``downloads/<name>/``, else a download from the public source (or from
``$SSMREC_MIRROR/<name>/<file>``), verified against the recorded sha256 before use.

Checksums were computed from byte-identical local copies (see each entry's ``provenance``); a file
we could not obtain offline has ``sha256=None``: it is downloaded with a warning, and the sha256 it
got is recorded in the dataset's fingerprint (``Interactions.source``) and report notes.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ssmrec.data.cache import downloads_dir, file_sha256
from ssmrec.errors import ChecksumError, DatasetNotFoundError

logger = logging.getLogger("ssmrec")

_LIGHTGCN = (
    "https://raw.githubusercontent.com/kuandeng/LightGCN/b067ec05f16a24e0e1efe63cd82385f0c469af20/Data"
)
_RECBOLE = (
    "https://raw.githubusercontent.com/RUCAIBox/RecBole/7b02be5ec80a88310f2d04a27a82adfcbb5dc211/dataset"
)
_IHGCL = "https://raw.githubusercontent.com/wangyu0627/IHGCL/e99132f3de5a279567d6985ea5357fb10b80a0bb/data"
_LIGHTGCNPP = (
    "https://raw.githubusercontent.com/geon0325/LightGCNpp/a394f79a7aceb8f485f6bcb549b4865fe83f1d49/data"
)


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name in the dataset folder, its public URL and its sha256 (if known)."""

    name: str
    url: str
    sha256: str | None


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    format: str
    """Reader format of the files (``lightgcn`` or ``atomic``)."""
    files: tuple[RemoteFile, ...]
    description: str
    provenance: str
    """Where the files and checksums come from, and any licence terms."""
    aliases: tuple[str, ...] = ()
    main_file: str | None = None
    """For single-file formats, the file the reader opens; ``None`` means the folder."""


REGISTRY: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in (
        DatasetEntry(
            name="gowalla",
            format="lightgcn",
            files=(
                RemoteFile(
                    "train.txt",
                    f"{_LIGHTGCN}/gowalla/train.txt",
                    "7244696fdeb23911319cf7b689f2e15a3c4c92549c873a5677b44e3f13cc3e62",
                ),
                RemoteFile(
                    "test.txt",
                    f"{_LIGHTGCN}/gowalla/test.txt",
                    "099a2a73924e4b754dc6efd730d764f492321b53c38eb93298850c83acf57be3",
                ),
            ),
            description="Gowalla check-ins, LightGCN/NGCF split: 29,858 users, 40,981 items, 810,128/217,242",
            provenance="kuandeng/LightGCN Data/gowalla at b067ec05; sha256 of a byte-identical copy "
            "(git blob ids match). Raw data: SNAP loc-gowalla.",
        ),
        DatasetEntry(
            name="yelp2018",
            format="lightgcn",
            files=(
                RemoteFile(
                    "train.txt",
                    f"{_LIGHTGCN}/yelp2018/train.txt",
                    "1e9568725a9e833d0ac3bae01c94cd95367f73b3bb6104fd26b5f65ea5054093",
                ),
                RemoteFile(
                    "test.txt",
                    f"{_LIGHTGCN}/yelp2018/test.txt",
                    "9cd9b37926cd1447a06625ffa7914527573fb097c10cb0bbdb1d1b8ded3742fe",
                ),
            ),
            description="Yelp2018, LightGCN/NGCF split: 31,668 users, 38,048 items, 1,237,259/324,147",
            provenance="kuandeng/LightGCN Data/yelp2018 at b067ec05; sha256 of a byte-identical copy "
            "(git blob ids match). Yelp dataset terms apply.",
        ),
        DatasetEntry(
            name="amazon-book",
            format="lightgcn",
            files=(
                RemoteFile("train.txt", f"{_LIGHTGCN}/amazon-book/train.txt", None),
                RemoteFile("test.txt", f"{_LIGHTGCN}/amazon-book/test.txt", None),
            ),
            description="Amazon-Book, LightGCN/NGCF split",
            provenance="kuandeng/LightGCN Data/amazon-book at b067ec05. NO CHECKSUM RECORDED: the files were "
            "not available offline when this registry was written, so downloads are unverified (a warning "
            "is printed and the sha256 obtained is recorded in the dataset fingerprint).",
        ),
        DatasetEntry(
            name="ml-100k",
            format="atomic",
            files=(
                RemoteFile(
                    "ml-100k.inter",
                    f"{_RECBOLE}/ml-100k/ml-100k.inter",
                    "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                ),
            ),
            main_file="ml-100k.inter",
            description="MovieLens-100K ratings (RecBole atomic), unsplit: 943 users, 1,682 items, 100,000",
            provenance="RUCAIBox/RecBole dataset/ml-100k at 7b02be5e. GroupLens terms: research use, "
            "no redistribution.",
        ),
        DatasetEntry(
            name="ml-1m",
            format="lightgcn",
            aliases=("ml-1m-full",),
            files=(
                RemoteFile(
                    "train.txt",
                    f"{_IHGCL}/movielens-1m/train.txt",
                    "4c88147bb8fde056b437d51b28b3d5f4ac699d0b3addb81767972c6db40ef717",
                ),
                RemoteFile(
                    "test.txt",
                    f"{_IHGCL}/movielens-1m/test.txt",
                    "c29d535498965beaccf332f9bbbd2645b2b0c42863456df6999d41590568adf1",
                ),
            ),
            description="MovieLens-1M, all 1,000,209 ratings as implicit feedback, 80/20 split: "
            "6,040 users, 3,706 items (ids not contiguous)",
            provenance="wangyu0627/IHGCL data/movielens-1m at e99132f3 (CRLF line ends). GroupLens terms: "
            "research use, no redistribution.",
        ),
        DatasetEntry(
            name="lastfm",
            format="lightgcn",
            files=(
                RemoteFile(
                    "train.txt",
                    f"{_LIGHTGCNPP}/lastfm/train.txt",
                    "1845769cb1a9834692d3cf884de523d23aa126fa6b58eb5f49e9628e8c317705",
                ),
                RemoteFile(
                    "valid.txt",
                    f"{_LIGHTGCNPP}/lastfm/valid.txt",
                    "9ae3440becfcbba19d5a5a8298b7933126f89424a468de5765bf1c6f08a9e3eb",
                ),
                RemoteFile(
                    "test.txt",
                    f"{_LIGHTGCNPP}/lastfm/test.txt",
                    "0f0a15e3de2f868554ee1e32190c51db3e0ad0c4138e1428c66ba6de86102755",
                ),
            ),
            description="Last.fm (HetRec 2011 user-artist), LightGCN++ split: 1,885 users, 17,388 items, "
            "64,315/9,143/18,321",
            provenance="geon0325/LightGCNpp data/lastfm at a394f79a. HetRec terms: non-commercial "
            "research use.",
        ),
    )
}


@dataclass(frozen=True)
class ResolvedDataset:
    entry: DatasetEntry
    folder: Path
    origin: str
    """``local`` ($SSMREC_DATA), ``downloads`` (cache, downloaded before) or ``downloaded`` (just now)."""
    notes: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        """What the reader opens: the folder, or the main file of a single-file format."""
        return self.folder / self.entry.main_file if self.entry.main_file else self.folder


def get_entry(name: str) -> DatasetEntry:
    """The registry entry for a name or alias (case-insensitive)."""
    wanted = name.strip().lower()
    for entry in REGISTRY.values():
        if wanted == entry.name or wanted in entry.aliases:
            return entry
    known = ", ".join(sorted(REGISTRY))
    raise DatasetNotFoundError(f"unknown dataset {name!r}; known datasets: {known} (or give a path)")


def resolve(
    name: str, *, data_root: str | Path | None = None, mirror: str | None = None, download: bool = True
) -> ResolvedDataset:
    """Find (or fetch) the files of a named dataset; see the module docstring for the order."""
    entry = get_entry(name)
    root = data_root if data_root is not None else os.environ.get("SSMREC_DATA")
    looked: list[str] = []
    if root:
        for folder_name in (entry.name, *entry.aliases):
            folder = Path(root).expanduser() / folder_name
            looked.append(str(folder))
            if all((folder / remote.name).is_file() for remote in entry.files):
                return ResolvedDataset(entry, folder, "local", _local_checksum_notes(entry, folder))
    folder = downloads_dir() / entry.name
    looked.append(str(folder))
    notes: list[str] = []
    fetched = False
    for remote in entry.files:
        target = folder / remote.name
        if target.is_file():
            if remote.sha256 is None:
                notes.append(_unverified_note(entry, remote, file_sha256(target)))
                continue
            if file_sha256(target) == remote.sha256:
                continue
            warnings.warn(
                f"{target} does not match its registered sha256; downloading it again", stacklevel=2
            )
            target.unlink()
        if not download:
            raise DatasetNotFoundError(
                f"dataset {entry.name!r} not found (looked in {', '.join(looked)}) "
                "and downloading is disabled"
            )
        url = mirror_url(entry, remote, mirror)
        try:
            got = download_file(url, target, remote.sha256)
        except DatasetNotFoundError as error:
            hint = f"set SSMREC_DATA to a folder holding {entry.name}/ (looked in {', '.join(looked)})"
            raise DatasetNotFoundError(f"{error}; {hint}") from None
        fetched = True
        if remote.sha256 is None:
            notes.append(_unverified_note(entry, remote, got))
    return ResolvedDataset(entry, folder, "downloaded" if fetched else "downloads", tuple(notes))


def mirror_url(entry: DatasetEntry, remote: RemoteFile, mirror: str | None = None) -> str:
    """``<mirror>/<dataset>/<file>`` with a mirror (argument or ``$SSMREC_MIRROR``), else the source URL."""
    base = mirror if mirror is not None else os.environ.get("SSMREC_MIRROR")
    return f"{base.rstrip('/')}/{entry.name}/{remote.name}" if base else remote.url


def download_file(url: str, dest: str | Path, sha256: str | None, *, timeout: float = 60.0) -> str:
    """Stream ``url`` to ``dest`` via a temp file, check its sha256, then move it into place.

    Returns the sha256 obtained. On a mismatch the download is deleted and ``ChecksumError`` raised;
    with ``sha256=None`` the file is kept but a warning says it could not be verified.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=f"download {dest.name}",
                leave=False,
                disable=None,
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        Path(temp_name).unlink(missing_ok=True)
        raise DatasetNotFoundError(f"could not download {url}: {error}") from None
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    got = digest.hexdigest()
    if sha256 is not None and got != sha256:
        Path(temp_name).unlink(missing_ok=True)
        raise ChecksumError(f"{url}: sha256 mismatch, expected {sha256}, got {got}; the download was deleted")
    if sha256 is None:
        warnings.warn(f"{url} has no registered checksum and was not verified (sha256 {got})", stacklevel=2)
    os.replace(temp_name, dest)
    return got


def _unverified_note(entry: DatasetEntry, remote: RemoteFile, got: str) -> str:
    return f"{entry.name}/{remote.name} has no registered checksum (unverified); sha256 {got}"


def _local_checksum_notes(entry: DatasetEntry, folder: Path) -> tuple[str, ...]:
    """Local copies are the user's to choose, so a mismatch is reported, not refused.

    Reported twice: a logged warning, seen when the run starts, and a note that ``load_dataset`` adds to
    ``DataReport.notes``, which every run records (numbers on a modified copy are not the benchmark's).
    """
    notes = []
    for remote in entry.files:
        if remote.sha256 is None:
            continue
        got = file_sha256(folder / remote.name)
        if got != remote.sha256:
            note = (
                f"{folder / remote.name} differs from the registered {entry.name} file (sha256 mismatch: "
                f"expected {remote.sha256}, got {got}); results are not comparable to the published ones"
            )
            logger.warning("warning: %s", note)
            notes.append(note)
    return tuple(notes)

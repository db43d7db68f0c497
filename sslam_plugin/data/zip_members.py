"""The members of a zip archive: where each one's bytes start, and which member an entry points at.

A manifest's zip entry (``archive.zip:OFFSET:LENGTH``, :mod:`sslam_plugin.data.packed_audio`) holds
only a byte range; clip ids and labels need the member's name, and ``sslam-pack`` needs the ranges of
the members it wrote. Both come from the central directory and each member's local header.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

from .packed_audio import ZipEntry

__all__ = ["ZipMember", "zip_index", "zip_member_name"]

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, 22 bytes we skip, name length, extra length
_member_names: Dict[str, Dict[int, str]] = {}


@dataclass(frozen=True)
class ZipMember:
    """A member of a zip archive: its name, where its bytes start, how many, how they are stored."""

    name: str
    offset: int
    length: int
    stored: bool  # ZIP_STORED: the bytes are the file itself
    file_size: int


def zip_index(archive: Union[str, "os.PathLike[str]"]) -> Tuple[List[ZipMember], bytes]:
    """(members in central-directory order, archive comment); raises OSError or zipfile.BadZipFile.

    A member's data start after its local header's own name and extra field, which may differ from the
    central directory's, so each local header is read (30 bytes per member).
    """
    members: List[ZipMember] = []
    with open(archive, "rb") as handle, zipfile.ZipFile(handle) as archive_file:
        for info in archive_file.infolist():
            handle.seek(info.header_offset)
            raw = handle.read(_LOCAL_HEADER.size)
            if len(raw) < _LOCAL_HEADER.size:
                raise zipfile.BadZipFile(f"{archive}: local header of {info.filename} is cut off")
            signature, name_length, extra_length = _LOCAL_HEADER.unpack(raw)
            if signature != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"{archive}: no local header where {info.filename} should start")
            start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            stored = info.compress_type == zipfile.ZIP_STORED
            members.append(ZipMember(info.filename, start, info.compress_size, stored, info.file_size))
        comment = archive_file.comment
    return members, comment


def zip_member_name(entry: ZipEntry) -> Optional[str]:
    """The name of the member whose data ``entry`` points at, or None (archive unreadable, no such member).

    The names of an archive are read once per process (archives are written once and then only read);
    an archive that cannot be opened is looked for again on the next call.
    """
    names = _member_names.get(entry.archive)
    if names is None:
        try:
            names = {member.offset: member.name for member in zip_index(entry.archive)[0]}
        except OSError:  # not there (yet): looked for again next time
            return None
        except zipfile.BadZipFile:
            names = {}
        _member_names[entry.archive] = names
    return names.get(entry.offset)

"""Resolve a Hugging Face model id (`owner/name`) to its config.json in the local Hugging Face cache, offline.

The cache is the one huggingface_hub writes (`hf download`, transformers' from_pretrained): `HF_HUB_CACHE`,
else `HF_HOME/hub`, else `~/.cache/huggingface/hub` (huggingface_hub/constants.py, with its legacy
`HUGGINGFACE_HUB_CACHE` and `XDG_CACHE_HOME`), laid out as `models--OWNER--NAME/refs/main` (a commit hash) and
`snapshots/HASH/config.json` (a symlink into `blobs/`). The snapshot `refs/main` points at is the one read.
huggingface_hub is imported only here, lazily, and only its filesystem lookup is used, with offline mode forced:
resolving an id never opens a connection.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from moelab.errors import MoelabError
from moelab.validation import show_value

# The Hub's repo id rules (huggingface_hub/utils/_validators.py, validate_repo_id): ASCII letters, digits, "-", "_"
# and "."; each part starts and ends with a letter, digit or "_"; at most 96 characters a part; no "--" or "..";
# no ".git" ending. Only the `owner/name` form counts here: a bare name is a preset or a path.
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_ID = re.compile(rf"({_PART})/({_PART})", re.ASCII)


def is_hub_id(text: str) -> bool:
    """Whether `text` has the form of a Hub model id, `owner/name` (the caller checks it is no path first).

    A name ending in ".json" is taken for a mistyped file path, never an id."""
    return (
        _ID.fullmatch(text) is not None
        and "--" not in text
        and ".." not in text
        and not text.lower().endswith((".git", ".json"))
    )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment now (as huggingface_hub/constants.py does
    at its import): HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, then
    ~/.cache/huggingface/hub."""
    env = os.environ.get
    home = env("HF_HOME") or os.path.join(env("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                                          "huggingface")
    cache = env("HF_HUB_CACHE") or env("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def _repo_folder(cache: Path, repo_id: str) -> str | None:
    """The id as the cache spells it: `models--owner--name` exactly, else the one folder equal to it ignoring
    case (the Hub's ids are case-insensitive; the cache keeps the casing it was downloaded with)."""
    folder = "models--" + repo_id.replace("/", "--")
    try:
        if (cache / folder).is_dir():
            return repo_id
        matches = [e.name for e in os.scandir(cache) if e.name.lower() == folder.lower() and e.is_dir()]
    except (OSError, ValueError):
        return None
    if len(matches) != 1:
        return None
    owner, name = matches[0].removeprefix("models--").split("--")  # "--" is refused in ids: two parts
    return f"{owner}/{name}"


def cached_config(repo_id: str) -> Path | None:
    """The config.json of `repo_id`'s snapshot at refs/main in the local cache, or None when the cache does not
    hold one. Never a network request."""
    cache = hub_cache_dir()
    cached_id = _repo_folder(cache, repo_id)
    if cached_id is None:
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    # try_to_load_from_cache only reads the filesystem (huggingface_hub/file_download.py); offline mode is forced
    # as well, so nothing huggingface_hub does later in this process may reach the network either.
    constants.HF_HUB_OFFLINE = True
    try:
        found = try_to_load_from_cache(cached_id, "config.json", cache_dir=str(cache), revision="main")
    except (OSError, ValueError):  # an unreadable refs/main, a cache folder that is not one
        return None
    return Path(found) if isinstance(found, str) else None


def not_cached(repo_id: str) -> MoelabError:
    """The one line for an id that is neither cached nor a preset's."""
    return MoelabError(
        f"unknown model {show_value(repo_id)}: not a preset, not a path, and not in the Hugging Face cache "
        f"{hub_cache_dir()} (moelab never downloads); fetch its config with `hf download {repo_id} config.json` "
        "(older huggingface_hub: `huggingface-cli download`), or pass a config.json path"
    )

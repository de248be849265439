"""A clone in a folder only root may enter (`mktemp -d`, `/root/streamsync`) starts its search
node: as root the node runs as the system user streamsync-es, which cannot traverse that folder,
so the node's files go under /tmp/streamsync-nodes/<hash of the checkout> (scripts/node-lib.sh,
`node_base`). Elsewhere, or as another user, the node's files stay in the clone's .work and a
private folder changes nothing, so the test runs only as root.

`make test` and `make demo` start their nodes through this same script; the test needs only the
clone's shell scripts, not a virtual environment of its own, and Maven's cache (~/.m2) is shared,
so nothing is downloaded again."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.elasticsearch import ROOT, es_url, es_version

pytestmark = [
    pytest.mark.slow,  # unpacks a distribution of its own and starts a node: about a minute
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="only root runs the node as another user (streamsync-es), who may not enter a "
        "private folder; any other user owns the folder and its node alike",
    ),
]


def run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture
def private_clone(tmp_path: Path) -> Iterator[Path]:
    """A clone of this checkout's HEAD in a folder of mode 0700; the node files it made outside
    it are removed with it."""
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    clone = private / "streamsync"
    run("git", "clone", "-q", ROOT, clone)
    yield clone
    outside = run("bash", "-c", "source scripts/node-lib.sh && node_base", cwd=clone)
    if outside.startswith("/tmp/streamsync-nodes/"):
        shutil.rmtree(outside, ignore_errors=True)


def test_a_clone_in_a_private_folder_starts_and_stops_its_node(private_clone: Path) -> None:
    script = private_clone / "scripts" / "elasticsearch.sh"
    name = f"anyfolder-{uuid.uuid4().hex[:8]}"
    try:
        started = run(script, "start", name, "0")
        url = run(script, "url", name)
        assert started == url
        assert es_version(url) == es_version(es_url()), "the same pinned version answers"
        assert not (private_clone / ".work" / "nodes").exists(), (
            "the node's files are where the node user can reach them, outside the clone"
        )
    finally:
        run(script, "stop", name)
    with pytest.raises(AssertionError, match="is not running"):
        run(script, "url", name)

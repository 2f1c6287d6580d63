"""A container's volumes as the test node mounts them: real mounts in a real mount namespace.

The node agent runs each container through ``tests/devcluster/mount_helper.py``. These specs
run that helper the way the agent does (a new mount namespace whose mounts do not propagate
back), with the volumes a sidecar-injected or operator pod has: an emptyDir on ``/tmp`` and a
projected service-account token at a path this machine does not have. They hold wherever the
image (a virtualenv) and the cluster directory live, under ``/tmp`` or not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.devcluster import mount_helper
from tests.devcluster.agent import ImageCatalog

TOKEN = "a-projected-token"
#: As ``ip netns exec`` does for the agent: a new mount namespace, nothing propagated back.
_NEW_MOUNT_NAMESPACE = ("unshare", "--mount", "--propagation", "slave")

#: Reads the token, writes into /tmp, and reports both: run by the image's own interpreter.
_REPORT = """
import json, os, sys
token_dir = sys.argv[1]
with open(os.path.join(token_dir, "token")) as f:
    token = f.read()
with open("/tmp/written-in-the-container", "w") as f:
    f.write("hello")
print(json.dumps({"token": token, "prefix": sys.prefix}))
"""


@pytest.fixture(params=["/tmp", "/var/tmp"], ids=["image-under-tmp", "image-outside-tmp"])
def image(request: pytest.FixtureRequest) -> Iterator[ImageCatalog]:
    """A virtualenv standing in for the image, under ``/tmp`` or outside it."""
    root = Path(tempfile.mkdtemp(prefix="gremlinlb-image-", dir=request.param))
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(root / "venv")],
            check=True,
            timeout=120,
        )
        yield ImageCatalog(bin_dir=root / "venv" / "bin")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    """The cluster directory the volumes' sources live in: under ``/tmp``, as by default."""
    root = Path(tempfile.mkdtemp(prefix="gremlinlb-cluster-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def missing_token_dir() -> Iterator[str]:
    """A mount path under ``/var/run`` that does not exist on this machine, and that must not
    exist after the container ran either."""
    top = f"/var/run/gremlinlb-spec-{uuid.uuid4().hex[:12]}"
    assert not os.path.lexists(top)
    yield f"{top}/secrets/kubernetes.io/serviceaccount"
    leftover = os.path.lexists(top)
    shutil.rmtree(top, ignore_errors=True)
    assert not leftover, f"{top} was written to this machine"


def _run_container(
    mounts: list[list[object]], keep: list[str], argv: list[str]
) -> subprocess.CompletedProcess[str]:
    spec = json.dumps({"mounts": mounts, "keep": keep})
    return subprocess.run(
        [*_NEW_MOUNT_NAMESPACE, sys.executable, "-S", mount_helper.__file__, spec, *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _volumes(cluster_dir: Path) -> tuple[Path, Path]:
    empty_dir = cluster_dir / "pods" / "operator-0" / "volumes" / "tmp"
    token_volume = cluster_dir / "pods" / "operator-0" / "volumes" / "kube-api-access"
    empty_dir.mkdir(parents=True)
    token_volume.mkdir(parents=True)
    (token_volume / "token").write_text(TOKEN, encoding="utf-8")
    return empty_dir, token_volume


def test_an_emptydir_on_tmp_hides_neither_volumes_nor_image_and_nothing_lands_on_the_machine(
    image: ImageCatalog, cluster_dir: Path, missing_token_dir: str
) -> None:
    empty_dir, token_volume = _volumes(cluster_dir)
    mounts: list[list[object]] = [
        [str(empty_dir), "/tmp", False],
        [str(token_volume), missing_token_dir, True],
    ]
    keep = [str(p) for p in (*image.image_paths(), cluster_dir)]
    python = str(image.bin_dir / "python")

    result = _run_container(mounts, keep, [python, "-c", _REPORT, missing_token_dir])

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"token": TOKEN, "prefix": str(image.bin_dir.parent)}
    assert (empty_dir / "written-in-the-container").read_text(encoding="utf-8") == "hello"
    assert not Path("/tmp/written-in-the-container").exists()


def test_a_read_only_volume_cannot_be_written_in_the_container(
    image: ImageCatalog, cluster_dir: Path, missing_token_dir: str
) -> None:
    _, token_volume = _volumes(cluster_dir)
    keep = [str(p) for p in (*image.image_paths(), cluster_dir)]
    write = "import sys; open(sys.argv[1] + '/token', 'w')"

    result = _run_container(
        [[str(token_volume), missing_token_dir, True]],
        keep,
        [str(image.bin_dir / "python"), "-c", write, missing_token_dir],
    )

    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    assert (token_volume / "token").read_text(encoding="utf-8") == TOKEN


def test_a_missing_volume_source_is_named_and_nothing_runs(
    image: ImageCatalog, cluster_dir: Path
) -> None:
    gone = cluster_dir / "no-such-volume"
    marker = cluster_dir / "ran"

    result = _run_container([[str(gone), "/tmp", False]], [], ["touch", str(marker)])

    assert result.returncode != 0
    assert f"mount /tmp: its source {gone}: No such file or directory" in result.stderr
    assert not marker.exists()

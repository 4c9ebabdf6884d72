"""cosign gets the registry login through a private Docker config, never on its command line."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from tasks.signing import verify_image, write_docker_config


def test_docker_config_logs_in_to_every_host_and_is_private(tmp_path: Path) -> None:
    config = write_docker_config(tmp_path / "docker", ["https://reg.example:5000/team", "mirror.example"], "ci", "s3")
    path = config / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(config.stat().st_mode) == 0o700
    auths = json.loads(path.read_text())["auths"]
    assert set(auths) == {"reg.example:5000", "mirror.example"}
    assert base64.b64decode(auths["mirror.example"]["auth"]) == b"ci:s3"


def test_verify_image_hands_cosign_the_login_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "seen"
    cosign = tmp_path / "cosign"
    cosign.write_text(f'#!/bin/sh\necho "$DOCKER_CONFIG $*" > "{seen}"\n')
    cosign.chmod(0o755)
    key = tmp_path / "cosign.pub"
    key.write_text("-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n")
    monkeypatch.setenv("ROLLBOOK_COSIGN", str(cosign))
    config = write_docker_config(tmp_path / "docker", ["reg.example"], "ci", "hunter2")
    answer = verify_image.fn("reg.example/app:1", str(key), docker_config=str(config))
    assert answer["verified"] is True
    line = seen.read_text()
    assert line.startswith(f"{config} verify --key {key}") and "hunter2" not in line

"""Our Actions destination's own tests, in Segment's style (jest, `createTestIntegration`,
nock), run by the README's test command: `npm test` in segment-actions/ type-checks the
definition and runs every `__tests__/` file."""

from __future__ import annotations

import re

import pytest

from tests.node import ROOT, node_packages, npm

pytestmark = pytest.mark.slow

NODE_PACKAGES = [ROOT / "segment-actions"]  # installed ahead (tests/node.py)


def test_the_destinations_jest_suite_passes() -> None:
    package = NODE_PACKAGES[0]
    node_packages(package)
    output = npm(package, "test", what="npm test (jest)")
    summary = re.search(r"^Tests:\s+(\d+) passed, (\d+) total$", output, re.MULTILINE)
    assert summary is not None, output[-3000:]  # jest's closing line: every test passed
    assert int(summary[1]) == int(summary[2]) > 0

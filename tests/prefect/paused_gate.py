"""Run the approval gate of test_approvals.py and stay paused (for the browser test): argv[1] is the run's name."""

from __future__ import annotations

import sys

from test_approvals import controls, gated

if __name__ == "__main__":
    gated.with_options(flow_run_name=sys.argv[1])(controls(timeout=900), return_state=True)

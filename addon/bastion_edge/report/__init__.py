"""`bastion-edge report`: a cutover report from the JSON access log.

`load` parses the log (bad lines are counted, never fatal), `stats` aggregates
(pure functions), `terminal` and `html` render the same numbers two ways.
"""

from __future__ import annotations

from bastion_edge.report.load import (
           LoadResult,
           MirrorResult,
           Record,
           load_log,
           parse_line,
           parse_time,
)
from bastion_edge.report.stats import Report, build_report

__all__ = ["LoadResult", "MirrorResult", "Record", "Report", "build_report", "load_log",
           "parse_line", "parse_time"]

"""Dashboards: pure views over the results table (views), Plotly figures (figures), one
self-contained HTML page per run directory (page). Torch-free: reads only the run directory."""

from xlt.dashboards.page import main_dashboard

__all__ = ["main_dashboard"]

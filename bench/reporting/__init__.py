"""Reports on result CSVs, split by job.

- `tables`: the analysis tables (pandas DataFrames), one configuration per `config_key`.
- `findings`: the opening summary, each finding with its CI and its table.
- `plots`: the PNG plots.
- `render`: report.md and report.html from the findings, tables and plots, in one order.
- `browser`: headless Chromium renders a report to PNG and measures its width (optional).

Loading lives in `bench.results.load_results`; the command line is `bench/report.py`.
"""

"""Reports on result CSVs, split by job.

- `tables`: the analysis tables (pandas DataFrames), one configuration per `config_key`.
- `plots`: the PNG plots.
- `render`: report.md and report.html from the tables and plots.

Loading lives in `bench.results.load_results`; the command line is `bench/report.py`.
"""

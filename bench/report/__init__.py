"""Reports on result CSVs, split by job.

- `tables`: the analysis tables (pandas DataFrames), one configuration per `config_key`.
- `findings`: the opening summary, each finding with its CI and its table.
- `plots`: the PNG plots.
- `render`: report.md and report.html from the findings, tables and plots, in one order.
- `text`: text from the rows made literal for markdown, HTML and plots.
- `output`: writing into `--out`: only files the report owns (its manifest), UTF-8, all or none.
- `browser`: headless Chromium renders a report to PNG and measures its width (optional).

Loading lives in `bench.results.load.load_results`; the command line is `python -m bench.report` (`cli`).
"""

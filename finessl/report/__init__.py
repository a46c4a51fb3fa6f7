"""The run report (docs/results.md#the-run-report): ``python main.py report RUN_DIR
[RUN_DIR ...] [--out DIR]`` draws report.html and PNG figures from what run folders
record (finessl/engine/diagnostics.py). :mod:`finessl.report.cli` parses the command
line without the plotting imports; :func:`finessl.report.page.build` writes the report.
"""

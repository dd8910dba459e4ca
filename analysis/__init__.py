"""Analysis of the study's runs: tables, figures, claim verdicts and the report, beside the paper's numbers.

Scripts are run as ``python -m analysis.<name> --study study.json ...``; every input path comes from the study
manifest or the command line (nothing is globbed). Pure functions live in small modules so they can be tested.
"""

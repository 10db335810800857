"""The experiment batch: every (dataset, setting, seed) of a parameters file, each run a papermill
execution of ``notebooks/07_run.ipynb``, a few at a time.

    python -m tvolib.runs --params params/table2_twitter2017.yaml --jobs 2
    python -m tvolib.runs --params params/table2_sample.yaml --dry-run     # the plan only
    python -m tvolib.runs --params params/table2_sample.yaml --summary     # tables only

``params``    parameter values and files; nothing secret is ever a parameter
``notebook``  one notebook executed with papermill, and its provenance record
``plan``      the parameters file's schema, and the runs it asks for
``identity``  what makes two runs the same run: skip, reuse, refuse
``artifacts`` what a finished run leaves in ``reports/experiments`` (metrics, predictions, provenance)
``child``     one run's process: its lock, the notebook, its artifacts (imports nothing else)
``execute``   the process pool: one child process per run, each holding its run's lock
``executors`` where runs execute: the local pool, or Slurm jobs through submitit (same child command)
``tables``    Table 2, comparisons of two experiments, the ΔF1 plot
``preflight`` every resource a parameters file's runs need, present or missing with the fix
``cli``       the command line
"""

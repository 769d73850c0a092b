"""The results API in one import: records (bench/records.py), tables (bench/tables.py) and plots
(bench/plots.py). Tables and plots are rebuilt from the records alone (``bench report``)."""
from .plots import curves_plot, task_plot  # noqa: F401
from .records import (REQUIRED_KEYS, RESULTS_DIR, atomic_write, check_writable, load_deployments,  # noqa: F401
                      load_records, write_record)
from .tables import _is_reference, overview, report, task_table  # noqa: F401

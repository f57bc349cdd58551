"""Cohorts: ``impactreg batch`` runs every pair of a CSV as a Dask task (an embedded LocalCluster, an
existing scheduler, or SLURM/PBS/SGE through dask-jobqueue), resumable, with a cohort report."""
from .cluster import JobQueueSettings, job_script
from .runner import CohortResult, run_cohort
from .table import CohortPair, read_cohort

__all__ = ["CohortPair", "CohortResult", "JobQueueSettings", "job_script", "read_cohort", "run_cohort"]

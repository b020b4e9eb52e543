"""Progress of a long task, shown in the run's logs and as a Prefect progress artifact."""

from __future__ import annotations

from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_run_logger

from sales_etl.progress import Progress


class ProgressReporter:
    """Wraps :class:`Progress`: a log line and an artifact update whenever a report is due.

    The artifact (key ``<key>``) shows the percentage in the UI when the expected count is
    known; the description carries the records, the rate and the estimate of the rest. Outside
    a flow or task run (a task's ``.fn`` called directly) there is no run to attach it to, so
    only the log line is written.
    """

    def __init__(self, progress: Progress, key: str) -> None:
        self.progress = progress
        self.key = key
        self._artifact: UUID | None = None

    def add(self, records: int) -> None:
        if self.progress.add(records):
            self.report()

    def report(self) -> None:
        text = self.progress.describe()
        get_run_logger().info("Progress %s", text)
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        percent = self.progress.percent if self.progress.percent is not None else 0.0
        if self._artifact is None:
            created = create_progress_artifact(percent, key=self.key, description=text)
            assert isinstance(created, UUID)  # a sync call returns the id, not a coroutine
            self._artifact = created
        else:
            update_progress_artifact(self._artifact, percent, description=text)

    def finish(self) -> None:
        """A last report (100% when the expected count was reached)."""
        self.report()

"""Exceptions that nextpipe raises for a node, so that retries and handlers can tell failures apart."""

from __future__ import annotations


class AppRunError(RuntimeError):
    """
    An app run ended without success (status ``failed`` or ``canceled``) or could not be followed.

    Parameters
    ----------
    message : str
        The error's text; it names the app and the run.
    app_id : str
        The application.
    run_id : str, optional
        The run, when it was created.
    status : str, optional
        The run's final status, when it ended (``None`` when polling was stopped or gave up).

    Attributes
    ----------
    app_id : str
        The application.
    run_id : str or None
        The run, when it was created.
    status : str or None
        The run's final status (``failed``, ``canceled``), when known.
    """

    def __init__(self, message: str, app_id: str, run_id: str | None = None, status: str | None = None):
        super().__init__(message)
        self.app_id = app_id
        self.run_id = run_id
        self.status = status


class StepTimeoutError(TimeoutError):
    """A node ran longer than its step's time limit (``@timeout``)."""

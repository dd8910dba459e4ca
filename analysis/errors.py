"""The one error type of the analysis scripts."""


class AnalysisInputError(ValueError):
    """A manifest, metrics, timing or samples file is missing or malformed; the message names the file."""

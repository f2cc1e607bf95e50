"""The one exception type the CLI turns into a single line and exit code 2."""


class XltError(Exception):
    """Bad input or an unmet precondition, described in one line that names where it is."""


class TrainingDiverged(XltError):
    """The training loss became NaN or infinite: the weights are lost, the trial stops and fails."""

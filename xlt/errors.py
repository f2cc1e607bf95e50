"""The one exception type the CLI turns into a single line and exit code 2."""


class XltError(Exception):
    """Bad input or an unmet precondition, described in one line that names where it is."""


class TrainingDiverged(XltError):
    """The training loss became NaN or infinite: the weights are lost, the trial stops and fails."""


class OutOfDeviceMemory(XltError):
    """A training or evaluation step did not fit in the accelerator's memory: the trial fails in
    one line naming the batch size that did not fit and the key that sets it."""


class DiskFull(XltError):
    """A write met ENOSPC (or a quota): the trial fails in one line naming what it was writing; the
    rows logged before stay, and `xlt run --resume` finishes the study once there is room."""

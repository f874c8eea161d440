"""The library's one error type, which every wing raises and every command reports."""


class PipelineError(Exception):
    """Bad input or params: the message names the file or key and the reason."""

"""Exception types; the CLI prints any of them as one line and exits non-zero."""


class HarnessError(Exception):
    """Base class for errors a user can act on; the message names the file or key at fault."""


class ProtocolError(HarnessError):
    """A protocol card is malformed, or a data root cannot satisfy it."""


class ManifestError(HarnessError):
    """A dataset manifest is inconsistent (duplicate ids, missing files, unknown labels)."""


class DecodeError(HarnessError):
    """A video could not be decoded."""


class StoreError(HarnessError):
    """An embedding file is invalid, incomplete or from another protocol."""


class OtherRunError(StoreError):
    """An output file or parts folder already holds another run's embeddings (another model, card or settings)."""


class ChunkingError(StoreError):
    """Parts of an unfinished run were cut into chunks of another size than the one asked for."""


class BusyError(HarnessError):
    """Another living run is writing the same output (its process, host and start are named)."""


class TooLargeError(HarnessError):
    """What a run would write is beyond the size it was allowed."""


class ProbeError(HarnessError):
    """A probe cannot score the given file (mismatched protocol, missing ids, bad config)."""


class AnnotationFileError(ManifestError, ValueError):
    """A ground-truth or prediction file is unreadable or malformed; the message names the file and the problem."""

"""Audio in: decode any WAV/MP3/FLAC/OGG to mono float32 at the model's rate (and write WAV).

Files are recognised by their content (libsndfile's detection plus our own look at the first bytes), never
by their extension: real recorders leave MP3 streams named ``.ogg`` or ``.wav``. Every failure is an
:class:`AudioError` subclass whose message names the file and the cause, so a device log or a training run
over thousands of files says which file to look at and why.

Truncated files: a WAV whose header promises more data than the file holds (a recorder that lost power
before finalising its header, or a copy that was cut), or an OGG stream without its end-of-stream page, is
**read as far as it goes**, with a logged warning and ``AudioInfo.truncated=True``: the audio present is
valid and field data are too precious to drop. A file cut inside its header, or right where its data
should begin (nothing to read), is a :class:`TruncatedAudioError`, and so is a FLAC/OGG/MP3 file whose
decoder gives up part way (libsndfile then returns nothing usable for that read).

Only numpy, soundfile and soxr are imported (this module runs on the hive device). Encoding MP3 is a desktop
job (codec experiments, augmentation, test files): :mod:`beeaudio.desktop.codec`.

Resampling is soxr's when it is installed. Where it is not (PyPI has no 32-bit ARM wheel of soxr, so a
32-bit Raspberry Pi OS device may lack it), :class:`SincResampler` does it: a Kaiser-windowed sinc in numpy,
flat to 1e-5 up to 0.4 of the lower rate and 100 dB down from 0.5 of it, which is far more than the model's
band (100-1000 Hz at 8 kHz) needs: the features of audio it resampled stay within 1e-4 of soxr's, the
tolerance the front end is held to against librosa (``tests/core/test_resample_fallback.py``). Common rates
cost a few ms per second of audio on a desktop; rates with a large reduced ratio (e.g. 44101 Hz) cost a
second or so more per file, for its table of taps. :data:`RESAMPLER` says which one this process uses.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

try:
    import soxr
except ImportError:  # no armv7l wheel on PyPI: SincResampler below does the resampling
    soxr = None

from beeaudio.core.errors import BeeaudioError
from beeaudio.core.fsio import atomic_path
from beeaudio.core.native_stderr import native_stderr_to_log

if TYPE_CHECKING:
    from beeaudio.core.features import FeatureConfig

__all__ = [
    "RESAMPLER",
    "SUPPORTED_CONTAINERS",
    "AudioError",
    "AudioInfo",
    "BandLimitError",
    "EmptyAudioError",
    "NonFiniteAudioError",
    "NotAudioError",
    "SincResampler",
    "TooShortAudioError",
    "TruncatedAudioError",
    "UnsupportedAudioError",
    "audio_files",
    "iter_windows",
    "load",
    "probe",
    "resample",
    "sinc_resample",
    "write_wav",
]

log = logging.getLogger(__name__)

SUPPORTED_CONTAINERS = ("WAV", "MP3", "FLAC", "OGG")
#: File names taken as recordings when a folder is given (inside a file, the content decides).
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".oga")
# libsndfile's names for the RIFF family all mean "a WAV file" to a user.
_CONTAINER_OF_FORMAT = {"WAV": "WAV", "WAVEX": "WAV", "RF64": "WAV", "W64": "WAV", "MP3": "MP3"}
_CONTAINER_OF_FORMAT.update({"FLAC": "FLAC", "OGG": "OGG"})
# Smallest complete header of each container: a file shorter than this that libsndfile refuses was cut.
_MIN_HEADER_BYTES = {"FLAC": 42, "OGG": 58, "MP3": 4}
_WAV_TAGS = {1: "PCM", 3: "IEEE float", 0xFFFE: "extensible"}
#: The resampler of this process: "soxr", or "sinc" (:class:`SincResampler`) where soxr is not installed.
RESAMPLER = "soxr" if soxr is not None else "sinc"


class AudioError(BeeaudioError):
    """A file that cannot be used as audio. ``str(e) == f"{path}: {reason}"``."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[AudioError], tuple[Path, str]]:
        # Keeps the two-argument constructor picklable (multiprocessing workers re-raise these).
        return (type(self), (self.path, self.reason))


class EmptyAudioError(AudioError):
    """0 bytes, or a valid header with 0 audio frames."""


class TruncatedAudioError(AudioError):
    """The file ends inside its header, before its data, or its decoder gave up part way."""


class NotAudioError(AudioError):
    """Not an audio file at all (text, random bytes, a picture ...)."""


class UnsupportedAudioError(AudioError):
    """Audio, but in a container or encoding we do not decode."""


class NonFiniteAudioError(AudioError):
    """Float samples that are NaN or infinite."""


class TooShortAudioError(AudioError):
    """Shorter than one analysis window (or the minimum asked for)."""


class BandLimitError(AudioError):
    """The recording's Nyquist frequency is below the band the model listens to."""


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    container: str  # "WAV" | "MP3" | "FLAC" | "OGG"
    subtype: str  # libsndfile's encoding name, e.g. "PCM_16", "FLOAT", "MPEG_LAYER_III", "VORBIS"
    sample_rate: int
    channels: int
    frames: int  # frames actually present (MP3: as the decoder reports)
    duration_s: float
    truncated: bool = False  # WAV/OGG cut short: read as far as it goes (see the module docstring)


# -- recognising files --
def _sniff(head: bytes) -> str | None:
    """Container by magic bytes, or None. Only used to tell "broken audio" from "not audio"."""
    if len(head) >= 4 and head[:4] in (b"RIFF", b"RIFX", b"RF64"):
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:3] == b"ID3":
        return "MP3"
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and (head[1] & 0x06) != 0:
        return "MP3"  # MPEG audio frame sync with a valid layer
    if head[:4] in (b"FORM", b".snd", b"caff"):
        return "OTHER"
    return None


@dataclass(frozen=True)
class _WavLayout:
    format_tag: int | None  # None: fmt chunk missing or cut
    block_align: int
    data_offset: int | None  # None: no data chunk header in the file
    declared_data_bytes: int
    file_bytes: int


def _wav_layout(path: Path) -> _WavLayout:
    """Walk the RIFF chunks ourselves: libsndfile silently shortens a WAV whose data are cut."""
    file_bytes = path.stat().st_size
    format_tag, block_align, data_offset, declared = None, 0, None, 0
    with path.open("rb") as fh:
        riff = fh.read(12)
        if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":  # RIFX (big-endian) and RF64: libsndfile's job
            return _WavLayout(None, 0, None, 0, file_bytes)
        while True:
            header = fh.read(8)
            if len(header) < 8:
                break
            chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
            start = fh.tell()
            if chunk_id == b"fmt ":
                body = fh.read(min(size, 40))
                if len(body) >= 16:
                    format_tag, _, _, _, block_align = struct.unpack("<HHIIH", body[:14])
                    if format_tag == 0xFFFE and len(body) >= 26:
                        format_tag = 0xFFFE if struct.unpack("<H", body[24:26])[0] in (1, 3) else -1
            elif chunk_id == b"data":
                data_offset, declared = start, size
                break
            fh.seek(start + size + (size & 1))
    return _WavLayout(format_tag, block_align, data_offset, declared, file_bytes)


def _ogg_ends_cleanly(path: Path) -> bool:
    """True when the last OGG page carries the end-of-stream flag (a complete, uncut stream)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - 65536))  # an OGG page is at most 65307 bytes
        tail = fh.read()
    last = tail.rfind(b"OggS")
    return last >= 0 and last + 6 <= len(tail) and bool(tail[last + 5] & 0x04)


def _explain_open_failure(path: Path, error: sf.LibsndfileError, container: str | None) -> AudioError:
    detail = (getattr(error, "error_string", "") or str(error)).strip()
    size = path.stat().st_size
    if container is None:
        return NotAudioError(path, f"not an audio file (no WAV/MP3/FLAC/OGG signature; libsndfile: {detail})")
    if container == "OTHER":
        return UnsupportedAudioError(
            path, f"audio container libsndfile cannot open ({detail}); convert it to WAV or FLAC"
        )
    if container == "WAV":
        layout = _wav_layout(path)
        if layout.format_tag is None:
            return TruncatedAudioError(
                path, f"WAV file cut inside its header ({size} bytes; libsndfile: {detail})"
            )
        if layout.format_tag not in _WAV_TAGS:
            tag = "unknown" if layout.format_tag < 0 else f"0x{layout.format_tag:04x}"
            return UnsupportedAudioError(
                path,
                f"WAV encoding {tag} is not supported (use PCM 8/16/24/32-bit or float);"
                f" libsndfile: {detail}",
            )
        if layout.data_offset is None:
            return TruncatedAudioError(path, f"WAV file ends before its data chunk ({size} bytes)")
        return UnsupportedAudioError(path, f"WAV file libsndfile cannot decode: {detail}")
    lowered = detail.lower()
    if (
        size < _MIN_HEADER_BYTES.get(container, 0)
        or container == "MP3"
        or any(word in lowered for word in ("malformed", "lost sync", "unexpected end", "unknown error"))
    ):
        return TruncatedAudioError(
            path, f"truncated or corrupt {container} file ({size} bytes; libsndfile: {detail})"
        )
    return UnsupportedAudioError(path, f"{container} file in an encoding libsndfile cannot decode: {detail}")


def _magic(path: Path) -> str | None:
    """The container the first bytes say (only looked at when libsndfile refuses the file)."""
    with path.open("rb") as fh:
        return _sniff(fh.read(16))


def _open(path: Path) -> tuple[sf.SoundFile, AudioInfo]:
    """Open by content and describe; raises the typed errors of every failure that shows before decoding."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise EmptyAudioError(path, "empty file (0 bytes)")
    try:
        handle = sf.SoundFile(path)
    except sf.LibsndfileError as error:
        raise _explain_open_failure(path, error, _magic(path)) from error
    except (RuntimeError, ValueError, TypeError) as error:  # e.g. soundfile on unusual subtypes
        error_class = NotAudioError if _magic(path) is None else UnsupportedAudioError
        raise error_class(path, f"cannot open as audio: {error}") from error
    try:
        info = _describe(path, handle)
    except BaseException:
        handle.close()
        raise
    return handle, info


def _describe(path: Path, handle: sf.SoundFile) -> AudioInfo:
    container = _CONTAINER_OF_FORMAT.get(handle.format)
    if container is None:
        raise UnsupportedAudioError(
            path,
            f"{handle.format} container is not supported (only {', '.join(SUPPORTED_CONTAINERS)});"
            f" convert it, e.g. `ffmpeg -i {path.name} out.wav`",
        )
    if handle.samplerate <= 0 or handle.channels <= 0:
        raise UnsupportedAudioError(
            path, f"invalid header: {handle.samplerate} Hz, {handle.channels} channels"
        )
    frames = int(handle.frames)
    truncated = False
    if container == "WAV" and handle.format in ("WAV", "WAVEX"):
        layout = _wav_layout(path)
        declared = layout.declared_data_bytes
        # 0 and 0xFFFFFFFF are "size unknown" placeholders written by streaming recorders.
        if layout.data_offset is not None and layout.block_align > 0 and 0 < declared < 0xFFFFFFFF:
            declared_frames = declared // layout.block_align
            if declared_frames > frames:
                if frames == 0:
                    raise TruncatedAudioError(
                        path,
                        f"WAV header promises {declared_frames} frames but the file ends where data begin",
                    )
                truncated = True
                log.warning(
                    "%s: truncated WAV: header promises %d frames, file holds %d (%.1f%%);"
                    " reading what is there",
                    path,
                    declared_frames,
                    frames,
                    100.0 * frames / declared_frames,
                )
    if container == "OGG" and not _ogg_ends_cleanly(path):
        # libsndfile quietly decodes the pages present; only the missing end-of-stream page tells.
        if frames <= 0:
            raise TruncatedAudioError(path, "OGG stream cut before its first audio page")
        truncated = True
        log.warning("%s: truncated OGG: no end-of-stream page; reading the %d frames present", path, frames)
    if frames <= 0:
        raise EmptyAudioError(path, f"{container} file with no audio frames")
    return AudioInfo(
        path=path,
        container=container,
        subtype=str(handle.subtype),
        sample_rate=int(handle.samplerate),
        channels=int(handle.channels),
        frames=frames,
        duration_s=frames / handle.samplerate,
        truncated=truncated,
    )


def probe(path: Path) -> AudioInfo:
    """Describe an audio file without decoding its samples. Raises the typed :class:`AudioError`s."""
    handle, info = _open(Path(path))
    handle.close()
    return info


# -- checks shared by load() and iter_windows() --
def _check_band(info: AudioInfo, max_band_hz: float | None) -> None:
    if max_band_hz is None:
        return
    nyquist = info.sample_rate / 2
    if nyquist < max_band_hz:
        raise BandLimitError(
            info.path,
            f"recorded at {info.sample_rate} Hz, so it holds nothing above {nyquist:g} Hz, but the model"
            f" listens up to {max_band_hz:g} Hz; upsampling would feed it silence. Use a model whose feature"
            f" band ends at or below {nyquist:g} Hz (FeatureConfig.fmax; the default 1000 Hz suits recorders"
            f" of 2 kHz and up) or record at {math.ceil(2 * max_band_hz)} Hz or more.",
        )


def _check_finite(path: Path, block: np.ndarray, offset_frames: int, sample_rate: int) -> None:
    finite = np.isfinite(block)
    if not finite.all():
        first = int(np.argmin(finite.reshape(finite.shape[0], -1).all(axis=1)))
        raise NonFiniteAudioError(
            path,
            f"{int(block.size - np.count_nonzero(finite))} non-finite samples (NaN/inf), the first at"
            f" {(offset_frames + first) / sample_rate:.3f} s; the file is corrupt or was written"
            " unnormalised",
        )


def _to_mono(block: np.ndarray) -> np.ndarray:
    if block.ndim == 1:
        return block.astype(np.float32, copy=False)
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0], dtype=np.float32)
    return block.mean(axis=1, dtype=np.float32)


#: Full scale of 16-bit PCM as libsndfile normalises it (a power of two: the conversion is exact).
_PCM16_SCALE = np.float32(1.0 / 32768.0)


#: What libsndfile's libmpg123 prints at some block boundaries of MP3s it decodes correctly ("[src/libmpg123/
#: layer3.c:INT123_do_layer3():1774] error: part2_3_length (2208) too large for available bit count
#: (2200)", python-soundfile issue 402): the samples equal those of one whole read, so it is not an error
#: of the recording, and goes to the debug log instead of a beekeeper's terminal or a device's journal.
_ROUTINE_MPG123_LINES = ("[src/libmpg123/",)


def _read(path: Path, handle: sf.SoundFile, frames: int) -> np.ndarray:
    """``frames`` frames (-1: the rest) as float32 ``(n, channels)``."""
    if handle.format != "MP3" or frames < 0:
        # One whole read has no block boundary (and a damaged file's complaints are then worth seeing).
        return _decode(path, handle, frames)
    # Other threads' lines written meanwhile are written back unchanged.
    with native_stderr_to_log(routine=_ROUTINE_MPG123_LINES, source=path.name, others="keep"):
        return _decode(path, handle, frames)


def _decode(path: Path, handle: sf.SoundFile, frames: int) -> np.ndarray:
    try:
        if handle.subtype == "PCM_16":
            # libsndfile's own short-to-float conversion costs ~5x the read (0.2 ms against 0.04 ms for 10 s
            # at 16 kHz); scaling by 2**-15 here gives the very same float32 values (tests/core/test_audio.py)
            raw = handle.read(frames, dtype="int16", always_2d=True)
            return np.multiply(raw, _PCM16_SCALE, dtype=np.float32)
        return handle.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise TruncatedAudioError(path, f"decoding failed after {handle.tell()} frames: {error}") from error


# -- public API --
def audio_files(*, paths: Iterable[Path]) -> list[Path]:
    """Files as given, and for each folder the recordings inside it (recursively, by name, sorted).

    A folder's hidden files and files still being written (``.part``, ``.tmp``) are left out; a path that
    is neither a file nor a folder raises ``FileNotFoundError`` naming it.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
                )
            )
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


def resample(audio: np.ndarray, *, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality; :class:`SincResampler` without soxr) of a mono
    signal, as float32."""
    signal = np.asarray(audio, dtype=np.float32)
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate or signal.size == 0:
        return signal.copy()
    if soxr is None:
        return sinc_resample(signal, orig_rate=orig_rate, target_rate=target_rate)
    return np.asarray(soxr.resample(signal, orig_rate, target_rate), dtype=np.float32)


def load(
    path: Path, *, sample_rate: int, max_band_hz: float | None = None, min_seconds: float = 0.0
) -> np.ndarray:
    """Decode a whole file to mono float32 at ``sample_rate`` (channels averaged, soxr resampling).

    ``max_band_hz``: refuse (:class:`BandLimitError`) a recording whose Nyquist frequency is below it.
    ``min_seconds``: refuse (:class:`TooShortAudioError`) a shorter recording.
    """
    path = Path(path)
    handle, info = _open(path)
    with handle:
        _check_band(info, max_band_hz)
        _check_short(info, min_seconds)
        block = _read(path, handle, -1)
    if block.shape[0] == 0:
        raise TruncatedAudioError(path, f"header announces {info.frames} frames but none could be decoded")
    _check_finite(path, block, 0, info.sample_rate)
    return resample(_to_mono(block), orig_rate=info.sample_rate, target_rate=sample_rate)


def _check_short(info: AudioInfo, min_seconds: float) -> None:
    if info.duration_s < min_seconds:
        raise TooShortAudioError(
            info.path,
            f"{info.duration_s:.3f} s of audio, shorter than the {min_seconds:g} s needed for one window",
        )


def iter_windows(
    path: Path, *, config: FeatureConfig, block_seconds: float = 60.0
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(start_s, samples)`` for every analysis window of a file, reading it in blocks.

    Memory stays bounded by ``block_seconds`` (plus one window) whatever the file's length. Windows fall
    exactly where ``features.window_starts`` puts them on the whole decoded file, and the samples equal
    those of :func:`load` (the streaming resampler is the same soxr filter, so they are bit-identical).
    The file is checked before the first window: :class:`BandLimitError` if its Nyquist frequency is below
    ``config.fmax``, :class:`TooShortAudioError` if it cannot fill one window.
    """
    path = Path(path)
    if block_seconds <= 0:
        raise ValueError(f"block_seconds must be positive, got {block_seconds}")
    # Checked now, not at the first next(): a caller learns at once that a file is unusable.
    handle, info = _open(path)
    try:
        _check_band(info, config.fmax)
        _check_short(info, config.window_seconds)
    except BaseException:
        handle.close()
        raise
    # The probe's handle is the one decoded (opening an MP3 again costs ~0.05 ms per file). A generator
    # dropped before its first window never enters its `with`: the handle then closes when it is freed.
    return _windows(info, handle, config=config, block_seconds=block_seconds)


#: Input frames per soxr call when streaming. One call over a whole 60 s block runs its filter over arrays
#: far larger than the CPU cache and costs ~1.5-2.5x what the same samples cost in pieces of this size
#: (measured: 0.43-0.76 ms against 0.33 ms for 10 s at 16 kHz -> 8 kHz); soxr's output does not depend on
#: how its input is cut (tests/core/test_audio.py), so the windows are unchanged.
_SOXR_PIECE_FRAMES = 16384


def _resampled_pieces(
    stream: soxr.ResampleStream | SincResampler | None,
    mono: np.ndarray,
    *,
    last: bool,
    whole: bool,
    rates: tuple[int, int],
) -> Iterator[np.ndarray]:
    """A decoded block at the model's rate, in pieces (soxr) or at once (no resampling; SincResampler,
    whose cost per call grows with its number of phases; ``whole``: the block is the whole file, which
    soxr's one-call resampler, the one :func:`load` uses, does fastest)."""
    if rates[0] == rates[1]:
        yield mono
        return
    if whole or stream is None:
        yield resample(mono, orig_rate=rates[0], target_rate=rates[1])
        return
    if isinstance(stream, SincResampler) or mono.size <= _SOXR_PIECE_FRAMES:
        yield stream.resample_chunk(mono, last=last)
        return
    for first in range(0, mono.size, _SOXR_PIECE_FRAMES):
        piece = mono[first : first + _SOXR_PIECE_FRAMES]
        yield stream.resample_chunk(piece, last=last and first + _SOXR_PIECE_FRAMES >= mono.size)


def _append(
    data: np.ndarray, filled: int, start: int, *, piece: np.ndarray, keep_from: int, spare: int
) -> tuple[np.ndarray, int, int]:
    """Append ``piece`` to ``data[:filled]``, the signal from index ``start`` on; when it does not fit,
    first drop what lies before ``keep_from`` (no future window needs it), then grow the array (with
    ``spare`` more samples) if it still does not. Returns the array, its fill and its start."""
    if filled + piece.size > data.size:
        drop = min(max(0, keep_from - start), filled)
        data[: filled - drop] = data[drop:filled]
        filled -= drop
        start += drop
        if filled + piece.size > data.size:
            grown = np.empty(filled + piece.size + spare, dtype=np.float32)
            grown[:filled] = data[:filled]
            data = grown
    data[filled : filled + piece.size] = piece
    return data, filled + piece.size, start


def _windows(
    info: AudioInfo, handle: sf.SoundFile, *, config: FeatureConfig, block_seconds: float
) -> Iterator[tuple[float, np.ndarray]]:
    path = info.path
    window, hop, rate = config.window_samples, config.hop_samples, config.sample_rate
    with handle:
        block_frames = max(1, round(block_seconds * info.sample_rate))
        # A file that fits in one block is read in one call and resampled in one, as load() does, and its
        # windows are cut from that signal itself.
        whole = info.frames <= block_frames
        stream: soxr.ResampleStream | SincResampler | None = None
        if info.sample_rate != rate and not whole and soxr is None:
            stream = SincResampler(orig_rate=info.sample_rate, target_rate=rate)
        elif info.sample_rate != rate and not whole:
            stream = soxr.ResampleStream(info.sample_rate, rate, 1, dtype="float32")
        # Otherwise, the signal at the model's rate from the first sample a window still needs: one array,
        # filled in place and compacted when full, instead of a concatenation (a copy of everything kept)
        # per block. Room for a window, a hop and a block's output, so it is compacted once a block
        # (compacting at every soxr piece cost ~0.1 ms per 10 s); it grows only if a resampler's flush
        # gives more than that.
        out_block = math.ceil(block_frames * rate / info.sample_rate) + 64
        data = np.empty(0 if whole else window + hop + out_block, dtype=np.float32)
        filled = 0  # samples of data in use
        buffer_start = 0  # index, in the output signal, of data[0]
        next_start = 0  # index of the next window's first sample
        read_frames = 0
        yielded = 0
        while True:
            block = _read(path, handle, -1 if whole else block_frames)
            last = whole or block.shape[0] < block_frames
            _check_finite(path, block, read_frames, info.sample_rate)
            read_frames += block.shape[0]
            pieces = _resampled_pieces(
                stream, _to_mono(block), last=last, whole=whole, rates=(info.sample_rate, rate)
            )
            for piece in pieces:
                if whole:  # the whole signal in one piece: the windows are cut from it
                    data, filled = piece, piece.size
                else:
                    data, filled, buffer_start = _append(
                        data, filled, buffer_start, piece=piece, keep_from=next_start, spare=window
                    )
                while next_start + window <= buffer_start + filled:
                    offset = next_start - buffer_start
                    yield next_start / rate, data[offset : offset + window].copy()
                    yielded += 1
                    next_start += hop
            if last:
                break
        if read_frames == 0:
            raise TruncatedAudioError(
                path, f"header announces {info.frames} frames but none could be decoded"
            )
        if yielded == 0:
            raise TooShortAudioError(
                path,
                f"{read_frames / info.sample_rate:.3f} s decoded, shorter than one"
                f" {config.window_seconds:g} s window",
            )


def write_wav(path: Path, *, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write mono (or (frames, channels)) audio as WAV, atomically: readers (e.g. a spool-folder watcher)
    never see a half-written file. PCM subtypes are clipped to [-1, 1] rather than wrapped."""
    path = Path(path)
    data = np.asarray(audio, dtype=np.float32)
    if subtype.startswith("PCM"):
        data = np.clip(data, -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(tmp, data, sample_rate, subtype=subtype, format="WAV")
    return path


# -- the resampler where soxr is not installed --
class SincResampler:
    """Streaming band-limited resampling in numpy: a Kaiser-windowed sinc evaluated at every output's
    position (polyphase: one row of taps per fractional position), linear phase and without delay.

    The filter is designed on the lower of the two rates ``low``: flat (ripple 1e-5) up to ``0.4 * low``
    and attenuated by 100 dB from ``0.5 * low``, so nothing above the new Nyquist frequency folds back.
    Output ``n`` lies at input time ``n * orig_rate / target_rate``; samples before the start and after the
    end are zeros, and a signal of ``m`` samples gives ``round(m * target_rate / orig_rate)`` (halves up),
    as soxr does. :meth:`resample_chunk` takes the signal in pieces of any size and gives exactly the
    samples of one call over the whole of it (``last=True`` on the final piece).
    """

    PASS_EDGE = 0.40  # of the lower rate: flat up to here
    STOP_EDGE = 0.50  # of the lower rate: 100 dB down from here
    ATTENUATION_DB = 100.0
    #: Above this many fractional positions the taps are computed per output instead of tabulated (the
    #: table holds ``up * taps`` floats: at most ~50 MB).
    MAX_TABLE_PHASES = 16384

    def __init__(self, *, orig_rate: int, target_rate: int) -> None:
        if orig_rate <= 0 or target_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
        common = math.gcd(int(orig_rate), int(target_rate))
        self.up, self.down = int(target_rate) // common, int(orig_rate) // common  # output n at n*down/up
        low = min(orig_rate, target_rate)
        # Kaiser's design rule, in cycles per input sample.
        width = (self.STOP_EDGE - self.PASS_EDGE) * low / orig_rate
        self._cutoff = 0.5 * (self.STOP_EDGE + self.PASS_EDGE) * low / orig_rate
        self._beta = 0.1102 * (self.ATTENUATION_DB - 8.7)
        self._half = 0.5 * (self.ATTENUATION_DB - 7.95) / (2.285 * 2 * math.pi * width)
        self.taps = 2 * math.ceil(self._half)  # input samples each output depends on
        self._table = (
            self._weights(np.arange(self.up, dtype=np.int64)) if self.up <= self.MAX_TABLE_PHASES else None
        )
        k = self.taps // 2
        self._buffer = np.zeros(k, dtype=np.float64)  # the zeros before the signal
        self._buffer_start = -k  # input index of _buffer[0]
        self._consumed = 0  # input samples received
        self._next = 0  # index of the next output
        self._done = False

    def _weights(self, phases: np.ndarray) -> np.ndarray:
        """Taps ``(len(phases), taps)`` for outputs at fractional input positions ``phases / up``, each row
        summing to one (no ripple of the gain from one position to the next)."""
        k = self.taps // 2
        tau = (phases[:, None] / self.up) + (k - 1) - np.arange(self.taps)[None, :]  # t - j, input samples
        ratio = np.clip(tau / self._half, -1.0, 1.0)
        window = np.i0(self._beta * np.sqrt(1.0 - ratio * ratio)) / np.i0(self._beta)
        window[np.abs(tau) > self._half] = 0.0
        kernel = 2 * self._cutoff * np.sinc(2 * self._cutoff * tau) * window
        return kernel / kernel.sum(axis=1, keepdims=True)

    def resample_chunk(self, chunk: np.ndarray, *, last: bool = False) -> np.ndarray:
        """The output samples that ``chunk`` (the next input samples, mono) completes, as float32."""
        if self._done:
            raise ValueError("the resampler has had its last chunk")
        x = np.asarray(chunk, dtype=np.float64).reshape(-1)
        self._consumed += x.size
        k = self.taps // 2
        parts = [self._buffer, x]
        if last:
            parts.append(np.zeros(k, dtype=np.float64))  # the zeros after the signal
            total = (2 * self._consumed * self.up + self.down) // (2 * self.down)
        self._buffer = np.concatenate(parts)
        if last:
            end = total
        else:
            # Output n needs inputs floor(n*down/up) - k + 1 .. floor(n*down/up) + k: the outputs before
            # `end` have all theirs.
            available = self._buffer_start + self._buffer.size  # one past the last input index known
            end = max(self._next, -(-(available - k) * self.up // self.down))
        out = self._compute(self._next, end)
        self._next = end
        if last:
            self._done = True
            self._buffer = np.zeros(0, dtype=np.float64)
        else:  # keep what later outputs still need
            first_needed = self._next * self.down // self.up - k + 1
            drop = min(max(0, first_needed - self._buffer_start), self._buffer.size)
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
        return out

    def _compute(self, start: int, end: int) -> np.ndarray:
        out = np.empty(max(0, end - start), dtype=np.float32)
        k = self.taps // 2
        windows = np.lib.stride_tricks.sliding_window_view(self._buffer, self.taps)
        # Outputs n and n + up sit at the same fractional position, down inputs apart: one strided pass
        # (a view, no copy) per position. Each output is the same dot product however the input was cut.
        if self._table is None:  # rates with more positions than a table holds (e.g. 8001 -> 8000 Hz)
            for first in range(start, end, self.MAX_TABLE_PHASES):
                n = np.arange(first, min(end, first + self.MAX_TABLE_PHASES), dtype=np.int64)
                base, phase = np.divmod(n * self.down, self.up)
                rows, weights = windows[base - k + 1 - self._buffer_start], self._weights(phase)
                out[first - start : first - start + n.size] = np.einsum("ij,ij->i", rows, weights)
            return out
        for first in range(start, min(end, start + self.up)):
            base, phase = divmod(first * self.down, self.up)
            count = len(range(first, end, self.up))
            offset = base - k + 1 - self._buffer_start
            rows = windows[offset : offset + (count - 1) * self.down + 1 : self.down]
            out[first - start :: self.up] = np.einsum("ij,j->i", rows, self._table[phase])
        return out


def sinc_resample(audio: np.ndarray, *, orig_rate: int, target_rate: int) -> np.ndarray:
    """:class:`SincResampler` over a whole mono signal, as float32 (what :func:`resample` does without
    soxr)."""
    signal = np.asarray(audio, dtype=np.float32)
    if orig_rate == target_rate or signal.size == 0:
        return signal.copy()
    return SincResampler(orig_rate=orig_rate, target_rate=target_rate).resample_chunk(signal, last=True)

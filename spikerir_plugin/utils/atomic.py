"""Atomic file writes: a reader (or a resumed run after a crash) sees either the old file or the complete new one.

Every file the plugin writes during a run (weights, training states, reports, images) goes through ``atomic_write``:
the content is written to a temporary file in the destination folder, flushed and fsync'ed, then renamed over the
destination (``os.replace`` is atomic on POSIX and Windows within one file system), and the folder is fsync'ed so
the rename itself survives a power cut. A killed process leaves at most a ``.<name>.*.tmp`` file, never a
truncated destination. The destination gets the permissions ``open()`` would give it under the process's umask
(``mkstemp`` makes its file 0600 whatever the umask).
"""
import contextlib
import io
import os
import re
import tempfile

# the temporary files atomic_write makes: .<destination name>.<random>.tmp
_TEMP_RE = re.compile(r'^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$')


def _current_umask():
    """The process's umask (reading it means setting it; set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode='wb'):
    """``with atomic_write(path) as f: f.write(...)`` - the destination appears complete or not at all."""
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_write: mode must be "w" or "wb", got {mode!r}')
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode, **({} if 'b' in mode else {'encoding': 'utf-8'})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def atomic_torch_save(obj, path):
    """torch.save(obj, path), atomically."""
    import torch
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


def atomic_write_text(path, text):
    with atomic_write(path, 'w') as f:
        f.write(text)


def atomic_imwrite(path, img, params=None):
    """cv2.imwrite, atomically; the format comes from the destination's extension. Raises on encoder failure."""
    import cv2
    ext = os.path.splitext(path)[1] or '.png'
    ok, encoded = cv2.imencode(ext, img, params or [])
    if not ok:
        raise OSError(f'could not encode an image of shape {getattr(img, "shape", None)} as {ext} for {path!r}')
    with atomic_write(path) as f:
        f.write(encoded.tobytes())


def basicsr_imwrite(img, file_path, params=None, auto_mkdir=True):
    """basicsr.utils.imwrite's signature and errors, written atomically (the plugin models' validation images)."""
    try:
        atomic_imwrite(file_path, img, params)
    except OSError as error:
        raise IOError(f'Failed in writing images: {error}') from error


def atomic_savefig(fig, path, **kwargs):
    """matplotlib's fig.savefig(path, ...), atomically; the format comes from the destination's extension."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=os.path.splitext(path)[1].lstrip('.') or 'png', **kwargs)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


def stale_temp_files(folder):
    """Temporary files a killed atomic write left in ``folder`` (never a complete destination file)."""
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if _TEMP_RE.match(n))

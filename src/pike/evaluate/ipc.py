"""Handing a child's outputs to the comparator without copying them through files.

The child describes each output tensor by a handle to its memory: a CUDA IPC handle on the GPU, a
shared-memory file on the CPU (the tensor is copied there once). The description is plain JSON, so
the comparator reads it without unpickling anything a candidate wrote, and maps the same memory: no
device-to-host copy, no file and no second copy in the orchestrator. The child keeps its tensors
alive until its question is answered.
"""

from __future__ import annotations

import base64
import contextlib
import mmap
import os
import re
import stat

import torch


class NotShareable(Exception):
    """An output this transport cannot describe (the caller falls back to files)."""


_SCALARS = (bool, int, float, str, type(None))


def _b64(x):
    return base64.b64encode(x).decode() if isinstance(x, bytes) else x


def _unb64(x):
    return base64.b64decode(x) if isinstance(x, str) else x


def _share_tensor(t: torch.Tensor, keep: list) -> dict:
    if type(t) is not torch.Tensor or t.layout != torch.strided or t.is_quantized:
        raise NotShareable(f"a {type(t).__name__} with layout {t.layout}")
    t = t.detach()
    meta = {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "stride": list(t.stride()),
            "offset": t.storage_offset()}
    if t.device.type == "cuda":
        if t.untyped_storage().nbytes() == 0:
            return {**meta, "empty": "cuda"}
        handle = t.untyped_storage()._share_cuda_()
        keep.append(t)
        return {**meta, "cuda": [_b64(x) for x in handle]}
    if t.device.type == "cpu":
        if t.untyped_storage().nbytes() == 0:
            return {**meta, "empty": "cpu"}
        if not t.is_shared():
            t = t.clone().share_memory_() if t.untyped_storage().nbytes() > 4 * t.nbytes + 4096 else t.share_memory_()
            meta.update(stride=list(t.stride()), offset=t.storage_offset())
        handle = t.untyped_storage()._share_filename_cpu_()
        keep.append(t)
        return {**meta, "cpu": [_b64(x) for x in handle]}
    raise NotShareable(f"a tensor on {t.device.type}")


def share(obj, keep: list):
    """A JSON-able description of ``obj`` (tensors, lists, tuples, dicts, plain scalars). ``keep``
    collects what must stay alive until the reader is done."""
    if isinstance(obj, torch.Tensor):
        return {"tensor": _share_tensor(obj, keep)}
    if isinstance(obj, (list, tuple)):
        return {"list": [share(o, keep) for o in obj]}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise NotShareable("a dict with keys other than strings and ints")
        return {"dict": [[k, share(v, keep)] for k, v in obj.items()]}
    if isinstance(obj, _SCALARS):
        return {"value": obj}
    raise NotShareable(f"a {type(obj).__name__}")


def _dtype(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"not a dtype: {name!r}")
    return dt


def _open_in(shm: str, name: str, size: int) -> torch.UntypedStorage:
    """A sandboxed child's shared memory: file ``name`` of its /dev/shm, seen from outside as the
    directory ``shm`` (the orchestrator's, never the child's say). Opened without following links:
    the child could otherwise point the comparator at any file it cannot see itself."""
    name = name.lstrip("/")
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"malformed shared-memory name {name!r}")
    dir_fd = os.open(shm, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < size:
            raise ValueError(f"{name!r} is not a regular file of {size} bytes or more")
        # torch's shared-memory files start with a header (its reference count): the data is their end
        mem = mmap.mmap(fd, st.st_size)
    finally:
        os.close(fd)
    return torch.frombuffer(mem, dtype=torch.uint8, offset=st.st_size - size, count=size).untyped_storage()


# The shared-memory files a CUDA IPC handle needs opened by name in /dev/shm: the driver's (named by
# the child's pid in its namespace) and torch's reference counter.
_CUDA_SHM = re.compile(r"(cuda\.shm\.[0-9.]+|torch_[0-9_]+)")


@contextlib.contextmanager
def _linked_shm(shm: str | None):
    """A sandboxed child's CUDA IPC files, hard-linked into this process's /dev/shm while a handle is
    opened (its own /dev/shm is another directory): without them the driver cannot map the memory.
    Regular files only, and never over a name that exists here."""
    linked = []
    try:
        if shm is not None:
            dir_fd = os.open(shm, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for name in os.listdir(dir_fd):
                    dst = os.path.join("/dev/shm", name)
                    if not _CUDA_SHM.fullmatch(name) or os.path.lexists(dst):
                        continue
                    if stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                        try:
                            os.link(name, dst, src_dir_fd=dir_fd, follow_symlinks=False)
                        except OSError:  # another file system: the open fails and outputs go through files
                            continue
                        linked.append(dst)
            finally:
                os.close(dir_fd)
        yield
    finally:
        for dst in linked:
            try:
                os.unlink(dst)
            except OSError:
                pass


def _open_tensor(spec: dict, shm: str | None = None) -> torch.Tensor:
    dtype = _dtype(spec["dtype"])
    shape, stride, offset = [int(x) for x in spec["shape"]], [int(x) for x in spec["stride"]], int(spec["offset"])
    if "empty" in spec:
        return torch.empty_strided(shape, stride, dtype=dtype, device=spec["empty"])
    if "cuda" in spec:
        device, handle, size, off, rc_handle, rc_off, ev_handle, ev_sync = (_unb64(x) for x in spec["cuda"])
        with _linked_shm(shm):
            storage = torch.UntypedStorage._new_shared_cuda(int(device), handle, int(size), int(off), rc_handle, int(rc_off),
                                                            ev_handle, bool(ev_sync))
        dev = torch.device("cuda", int(device))
    else:
        manager, name, size = (_unb64(x) for x in spec["cpu"])
        if shm is not None:
            storage = _open_in(shm, name.decode() if isinstance(name, bytes) else str(name), int(size))
        else:
            storage = torch.UntypedStorage._new_shared_filename_cpu(manager, name, int(size))
        dev = torch.device("cpu")
    # set_ checks that the view fits in the storage: a bad description cannot read past it
    return torch.empty(0, dtype=dtype, device=dev).set_(storage, offset, shape, stride)


def open_shared(spec, shm: str | None = None):
    """The object ``share`` described (lists come back as lists: comparisons look at nesting only).
    ``shm``: where a sandboxed child's /dev/shm is (``_open_in``)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError("malformed output description")
    (kind, v), = spec.items()
    if kind == "tensor":
        return _open_tensor(v, shm)
    if kind == "list":
        return [open_shared(o, shm) for o in v]
    if kind == "dict":
        return {k: open_shared(o, shm) for k, o in v}
    if kind == "value":
        if not isinstance(v, _SCALARS):
            raise ValueError("malformed output description")
        return v
    raise ValueError(f"malformed output description ({kind!r})")

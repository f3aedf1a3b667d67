"""systemd's ``MemoryDenyWriteExecute=yes``, reproduced with a seccomp filter, for machines without systemd as PID 1.

systemd 252 (Debian/Raspberry Pi OS Bookworm) implements the setting as a seccomp filter
(src/shared/seccomp-util.c, ``seccomp_memory_deny_write_execute``) that fails with EPERM:

- ``mmap`` whose ``prot`` has both PROT_WRITE and PROT_EXEC,
- ``mprotect`` and ``pkey_mprotect`` whose ``prot`` has PROT_EXEC (also what an executable stack
  request of ``dlopen`` needs),
- ``shmat`` with SHM_EXEC.

This module installs the same rules (plus ``no_new_privs``, which systemd also sets) on the
current process; every thread started later inherits them. Run as a script it installs them and
then runs a Python module like ``python -m``::

    python tests/seccomp_mdwe.py noisewatch.cli run --input scene.flac --speed 0
"""

from __future__ import annotations

import ctypes
import platform
import runpy
import sys

PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
EPERM = 1
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
# (audit arch, mmap, mprotect, pkey_mprotect, shmat)
ARCHES = {"x86_64": (0xC000003E, 9, 10, 329, 30), "aarch64": (0xC00000B7, 222, 226, 288, 196)}
LD_ABS_W, JEQ_K, AND_K, RET_K = 0x20, 0x15, 0x54, 0x06
OFF_NR, OFF_ARCH, OFF_ARG2 = 0, 4, 32  # struct seccomp_data; low 32 bits of args[2] (little endian)


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


def program(machine: str) -> list[tuple[int, int, int, int]]:
    """The BPF program as (code, jt, jf, k); jumps are relative, as the kernel wants."""
    arch, mmap_nr, mprotect_nr, pkey_nr, shmat_nr = ARCHES[machine]
    deny, allow = (RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM), (RET_K, 0, 0, SECCOMP_RET_ALLOW)

    def masked(mask: int) -> list[tuple[int, int, int, int]]:
        """Deny when (args[2] & mask) == mask."""
        return [(LD_ABS_W, 0, 0, OFF_ARG2), (AND_K, 0, 0, mask), (JEQ_K, 0, 1, mask), deny, allow]

    head = [(LD_ABS_W, 0, 0, OFF_ARCH), (JEQ_K, 1, 0, arch), allow, (LD_ABS_W, 0, 0, OFF_NR)]
    checks = [(mmap_nr, PROT_WRITE | PROT_EXEC), (mprotect_nr, PROT_EXEC), (pkey_nr, PROT_EXEC), (shmat_nr, SHM_EXEC)]
    dispatch_len = len(checks) + 1  # one jump per syscall, then "allow"
    body: list[tuple[int, int, int, int]] = []
    dispatch = []
    for i, (nr, mask) in enumerate(checks):
        dispatch.append((JEQ_K, dispatch_len - i - 1 + len(body), 0, nr))
        body += masked(mask)
    return head + dispatch + [allow] + body


def deny_write_execute() -> None:
    """Install the filter on this process (irreversible). Raises OSError if the kernel refuses."""
    insns = program(platform.machine())
    array = (SockFilter * len(insns))(*(SockFilter(*i) for i in insns))
    prog = SockFprog(len(insns), array)
    libc = ctypes.CDLL(None, use_errno=True)
    for args in ((PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0)):
        if libc.prctl(*args) != 0:
            raise OSError(ctypes.get_errno(), "prctl failed")


if __name__ == "__main__":
    deny_write_execute()
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)

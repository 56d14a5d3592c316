"""The emulator's exceptions."""

from __future__ import annotations


class EmulatorCompileError(RuntimeError):
    """g++ rejected a kernel source; the message contains g++'s diagnostics."""

    def __init__(self, message: str, *, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr


class KernelError(RuntimeError):
    """An error detected while a kernel ran: a failed ``assert``, a barrier some threads
    never reach, threads at different barriers, a collective with inactive or
    mismatched lanes, a deadlock.

    The message reads ``<kind> in kernel <name> at <file>:<line>, block (x,y,z),
    thread (x,y,z): <detail>``; the parts are also attributes.
    """

    def __init__(self, kind: str, kernel: str, file: str, line: int,
                 block: tuple[int, int, int], thread: tuple[int, int, int], detail: str):
        self.kind, self.kernel, self.file, self.line = kind, kernel, file, line
        self.block, self.thread, self.detail = block, thread, detail
        where = f" at {file}:{line}, block {_xyz(block)}, thread {_xyz(thread)}" if file else ""
        super().__init__(f"{kind} in kernel {kernel}{where}: {detail}")


def _xyz(v: tuple[int, int, int]) -> str:
    return "({},{},{})".format(*v)

"""The one error style of every command: `Error: <what>; <fix>` on stderr, and an exit code.

    2    bad usage: an option typer cannot parse, or a ValueError / OSError from the library,
         whose messages name the option or file and say what to do; output that cannot be
         written (stdout on a full disk)
    1    a run that failed on its own: the loss diverged, trainings of a sweep failed
    130  Ctrl-C; the message says what was saved and how to resume

The top-level group (charlstm_cli.main) routes every command through `Group`, so commands hold
no error handling of their own.
"""

import errno
import os
import sys

import typer
from typer.core import TyperGroup

try:  # typer vendors click from 0.2x on; earlier versions use the click package
    from typer._click import exceptions as click_exceptions
except ImportError:
    from click import exceptions as click_exceptions

from charlstm.loop import Diverged, Interrupted

USAGE, FAILED, INTERRUPTED = 2, 1, 130


def fail(what: str, code: int = USAGE):
    """Print one error line and stop with `code`."""
    print(f"Error: {what}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


# What writing to a stream can fail with, besides a reader that went away (EPIPE).
_WRITE_ERRORS = (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT)


def _output_failed(exc: OSError) -> str:
    """The error line for output that could not be written; stdout is pointed at /dev/null, so
    that the interpreter's last flush of what is still buffered does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return (f"cannot write the output ({exc.strerror or exc}); send it where there is room (a "
            "saved run also keeps its result.json)")


def _usage_line(exc) -> str:
    what = exc.format_message().strip().rstrip(".")
    ctx = getattr(exc, "ctx", None)
    where = f"`{ctx.command_path} --help`" if ctx is not None else "`charlstm --help`"
    fix = f" See {where}" if what.endswith("?") else f"; see {where}"
    return f"{what[:1].lower()}{what[1:]}{fix}"


class Group(TyperGroup):
    """typer's group, with errors in the one style instead of typer's boxes and tracebacks."""

    def invoke(self, ctx):
        try:
            done = super().invoke(ctx)
            sys.stdout.flush()  # a full disk shows here, while the error can still be told
            return done
        except click_exceptions.ClickException:
            raise
        except Interrupted as exc:
            print(str(exc), file=sys.stderr, flush=True)
            raise typer.Exit(INTERRUPTED) from None
        except KeyboardInterrupt:
            print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
            raise typer.Exit(INTERRUPTED) from None
        except Diverged as exc:
            fail(str(exc), FAILED)
        except BrokenPipeError:
            raise  # the reader went away (`| head`): typer ends quietly
        except OSError as exc:
            if exc.filename is None and exc.errno in _WRITE_ERRORS:
                fail(_output_failed(exc), USAGE)
            fail(str(exc) or type(exc).__name__, USAGE)
        except ValueError as exc:
            fail(str(exc) or type(exc).__name__, USAGE)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except click_exceptions.NoArgsIsHelpError as exc:
            exc.show()
            code = exc.exit_code
        except click_exceptions.ClickException as exc:
            print(f"Error: {_usage_line(exc)}", file=sys.stderr, flush=True)
            code = exc.exit_code
        except typer.Abort:
            print("Error: aborted", file=sys.stderr, flush=True)
            code = FAILED
        except OSError as exc:  # --help to a full disk
            if exc.errno not in _WRITE_ERRORS:
                raise
            print(f"Error: {_output_failed(exc)}", file=sys.stderr, flush=True)
            code = USAGE
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code

"""The one error style of every command: `Error: <what>; <fix>` on stderr, and an exit code.

    2    bad usage: an option typer cannot parse, or a ValueError / OSError from the library,
         whose messages name the option or file and say what to do
    1    a run that failed on its own: the loss diverged
    130  Ctrl-C; the message says what was saved and how to resume

The top-level group (charlstm_cli.main) routes every command through `Group`, so commands hold
no error handling of their own.
"""

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
            return super().invoke(ctx)
        except click_exceptions.ClickException:
            raise
        except Interrupted as exc:
            print(str(exc), file=sys.stderr, flush=True)
            raise typer.Exit(INTERRUPTED) from None
        except Diverged as exc:
            fail(str(exc), FAILED)
        except BrokenPipeError:
            raise  # the reader went away (`| head`): typer ends quietly
        except (ValueError, OSError) as exc:
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
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code

"""Command-line parsing shared by the job scripts: ``[--preset NAME] [--section.key=value ...]``."""

from __future__ import annotations

import argparse

from diled_platform.config import JobConfig, load_config, preset_names


def parse_job_args(argv: list[str] | None, default_preset: str, description: str) -> JobConfig:
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Any --section.key=value overrides a preset value (parsed as YAML), e.g. --optim.lr=1e-3 "
               "--run.name=my-run. Re-running with the same --run.name resumes that run.")
    parser.add_argument("--preset", default=default_preset,
                        help=f"a preset name ({', '.join(preset_names())}) or a YAML file (default: %(default)s)")
    args, overrides = parser.parse_known_args(argv)
    return load_config(args.preset, overrides)


def pop_flag(argv: list[str] | None, flag: str) -> tuple[list[str], bool]:
    """``argv`` (default ``sys.argv[1:]``) without ``flag``, and whether it was there (a job's own switch
    beside the config overrides)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    present = flag in argv
    return [a for a in argv if a != flag], present

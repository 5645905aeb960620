"""``audit run``: the whole audit in one command."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from audit.commands.options import (cache_options, dataset_option, face_options, make_face_config,
                                    parse_group_by, scheduler_option, seed_option, target_options,
                                    threads_option, training_options, write_junit, write_verdict_file)
from audit.commands.terminal import echo
from audit.gate import format_verdict_table, verdict_to_junit, verdict_to_markdown
from audit.outputs import check_writable_file
from audit.results import CORRECTIONS
from audit.run_config import (DEFAULT_CORRECTION, DEFAULT_N_RESAMPLES, DEFAULT_PROBES, MAX_GENERATOR_SEEDS,
                              MAX_N_RESAMPLES, MAX_REQUESTS, PROBES, RunConfig)


@click.command()
@target_options
@dataset_option
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False, path_type=Path), default="audit-out",
              show_default=True, help="Folder for results.json, groups.csv, checkpoints and the report.")
@click.option("--overwrite", is_flag=True, help="Write into --out even where it holds files this tool did not "
              "write (a folder of its own earlier run, or a resume, needs no flag).")
@click.option("--group-by", "group_by", help="Attributes to compare, e.g. race,gender (default: race and "
              "gender where present). Each alone and their intersection are reported.")
@click.option("--probes", default=",".join(DEFAULT_PROBES), show_default=True,
              help=f"Which probes to run, from {', '.join(PROBES)} or a plugin's (see 'audit probes'). "
                   "'volume,verification' needs no "
                   "generator and takes seconds on cached embeddings.")
@training_options
@click.option("--train-dataset", "train_datasets", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Train the generator on this corpus (repeatable: e.g. all of UTKFace and LFW) and measure "
                   "every person of --dataset; images of audit people are dropped from it. Without it the "
                   "generator trains on part of --dataset, which needs thousands of images.")
@click.option("--generator", "generator_paths", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Use this finished generator ('audit generator train') instead of training one "
                   "(repeatable: one folder per seed).")
@click.option("--generator-seeds", type=click.IntRange(1, MAX_GENERATOR_SEEDS), default=1, show_default=True,
              help="Train this many generators with different seeds: figures pool them and a disparity "
                   "counts only if it holds under every one.")
@seed_option("Seed of splits, training and bootstrap")
@click.option("--resamples", "n_resamples", type=click.IntRange(100, MAX_N_RESAMPLES), default=DEFAULT_N_RESAMPLES,
              show_default=True, help="Bootstrap resamples behind each 95% interval of a mean.")
@click.option("--correction", type=click.Choice(CORRECTIONS), default=DEFAULT_CORRECTION, show_default=True,
              help="How findings survive the run's many comparisons: holm (no false finding in the whole "
                   "report, at 95%) or bh (Benjamini-Hochberg: at most 5% of findings false).")
@click.option("--pairs", "pairs_file", help="Official verification pairs (LFW's pairs.txt): a file or a URL "
              "(s3://...); found in the dataset folder (local or at a URL) if there.")
@click.option("--max-requests", type=click.IntRange(1, MAX_REQUESTS), help="Budget of API requests (cloud targets).")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Gate the results on this policy (TOML); exit code 1 when a rule fails.")
@click.option("--baseline", "baseline_path", type=click.Path(exists=True, path_type=Path),
              help="results.json of the last release, for the policy's baseline rules.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With --policy: write the verdict as JUnit XML here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With --policy: write the verdict as a short Markdown summary here (for $GITHUB_STEP_SUMMARY "
                   "or a merge-request comment).")
@click.option("--no-report", is_flag=True, help="Skip the HTML and PDF report ('audit report' renders it later).")
@click.option("--no-faces", is_flag=True, help="Leave every face image out of the report.")
@cache_options
@threads_option
@face_options
@scheduler_option
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def run(junit_path: Path | None, markdown_path: Path | None, quiet: bool, **options) -> None:
    """Audit a face model for demographic bias: embed, probe, report, gate.

    Embeds every image of the dataset through the target (cached), trains
    the inversion generator and measures per group how well faces are
    reconstructed, measures each group's room in the embedding space and
    its verification error rates, and writes OUT/results.json,
    OUT/groups.csv and OUT/report.html + report.pdf.  Killed and started
    again, it resumes from the cache and the last checkpoint.

    \b
    Examples:
      audit run --target dlib --dataset balanced/ --train-dataset utkface/ --out runs/dlib
      audit run --target dlib --dataset balanced/ --generator gen/dlib/
      audit run --target clarifai --dataset balanced/ --policy examples/policy.toml
      audit run --dataset balanced/ --generator gen/ --policy examples/policy.toml --markdown gate.md
      audit run --dataset lfw/ --probes volume,verification
      audit run --dataset s3://bucket/balanced --scheduler tcp://10.0.0.5:8786 --out runs/dlib
    """
    for path, option, what in ((junit_path, "--junit", "the JUnit file"),
                               (markdown_path, "--markdown", "the Markdown verdict")):
        if path is not None:
            if options["policy_path"] is None:
                raise click.UsageError(f"{option} writes the policy's verdict: give --policy too.")
            check_writable_file(path, what=what, option=option)
    config = run_config(options, show_progress=not quiet)
    # The runner brings torch, the probes and the report's renderer: loaded only when a run starts,
    # so that 'audit --help' and 'audit gate' in CI stay quick.
    from audit.runner import run_audit

    outcome = run_audit(config)
    echo(f"Results: {outcome.out_dir / 'results.json'}")
    for kind, path in outcome.report_files.items():
        echo(f"Report ({kind}): {path}")
    if outcome.verdict is not None:
        echo(format_verdict_table(outcome.verdict))
        if junit_path is not None:
            write_junit(junit_path, verdict_to_junit(outcome.verdict))
        if markdown_path is not None:
            write_verdict_file(markdown_path, verdict_to_markdown(outcome.verdict, outcome.results),
                               what="the Markdown verdict", option="--markdown")
        sys.exit(outcome.exit_code)


#: Options that reach RunConfig under their own name, unchanged.
_SAME_NAME = ("dataset_dir", "out_dir", "target_spec", "cache_path", "workers", "scheduler", "seed", "epochs",
              "batch_size", "lr", "validate_every", "average_identities", "generator_channels", "identity_loss",
              "train_balance", "train_per_group", "generator_seeds", "near_duplicate_distance", "n_resamples",
              "correction", "pairs_file", "no_faces", "policy_path", "baseline_path", "max_requests", "device",
              "overwrite")


#: Options converted on their way to RunConfig.
_CONVERTED = ("target_option", "group_by", "probes", "detector", "upsample", "min_score", "no_cache", "image_size",
              "train_datasets", "generator_paths", "no_report")


def run_config(options: dict, *, show_progress: bool) -> RunConfig:
    """The run's settings from the command's options (RunConfig checks them all before any work)."""
    o = options
    forgotten = set(o) - set(_SAME_NAME) - set(_CONVERTED)
    if forgotten:   # an option added to the command but not passed on would be silently ignored
        raise RuntimeError(f"audit run: options {sorted(forgotten)} do not reach RunConfig")
    return RunConfig(
        **{name: o[name] for name in _SAME_NAME},
        target_options=tuple(o["target_option"]), group_by=parse_group_by(o["group_by"]),
        probes=tuple(p.strip() for p in o["probes"].split(",") if p.strip()),
        face_config=make_face_config(o["detector"], o["upsample"], o["min_score"]), use_cache=not o["no_cache"],
        image_size=int(o["image_size"]), train_datasets=tuple(o["train_datasets"]),
        generator_paths=tuple(o["generator_paths"]), report=not o["no_report"], show_progress=show_progress,
        command_line=shlex.join(["audit", *sys.argv[1:]]))

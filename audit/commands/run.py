"""``audit run``: the whole audit in one command."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from audit.commands.options import (cache_options, dataset_option, face_options, make_face_config,
                                    parse_group_by, target_options)
from audit.results import CORRECTIONS
from audit.runner import (DEFAULT_CORRECTION, DEFAULT_EPOCHS, DEFAULT_N_RESAMPLES, DEFAULT_PROBES, PROBES, RunConfig,
                          run_audit)


@click.command()
@target_options
@dataset_option
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False, path_type=Path), default="audit-out",
              show_default=True, help="Folder for results.json, groups.csv, checkpoints and the report.")
@click.option("--group-by", "group_by", help="Attributes to compare, e.g. race,gender (default: race and "
              "gender where present). Each alone and their intersection are reported.")
@click.option("--probes", default=",".join(DEFAULT_PROBES), show_default=True,
              help=f"Which probes to run, from {', '.join(PROBES)}. 'volume,verification' needs no "
                   "generator and takes seconds on cached embeddings.")
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULT_EPOCHS, show_default=True,
              help="Generator training epochs (the method's 150; fewer on a CPU).")
@click.option("--image-size", type=click.Choice(["64", "128"]), default="64", show_default=True,
              help="Size of the reconstructed faces.")
@click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training batch size (the method's 200; larger on a GPU).")
@click.option("--validate-every", type=click.IntRange(min=1), default=5, show_default=True,
              help="Re-embed validation reconstructions every K epochs to pick the best checkpoint.")
@click.option("--average-identities", is_flag=True,
              help="Train on per-identity averaged chips (identities with 3+ images), as in the method.")
@click.option("--generator-channels", type=click.IntRange(min=8), default=512, show_default=True,
              help="Channels of the generator's first 4x4 map (the method's 512; smaller trains faster).")
@click.option("--identity-loss", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="White-box option (dlib): add this weight x the target's embedding distance to the "
                   "generator's loss. Off by default so black-box and white-box audits stay comparable.")
@click.option("--device", default="auto", show_default=True, help="auto (the GPU if any), cpu or cuda.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of splits, training and bootstrap.")
@click.option("--resamples", "n_resamples", type=click.IntRange(min=100), default=DEFAULT_N_RESAMPLES,
              show_default=True, help="Bootstrap resamples behind each 95% interval of a mean.")
@click.option("--correction", type=click.Choice(CORRECTIONS), default=DEFAULT_CORRECTION, show_default=True,
              help="How findings survive the run's many comparisons: holm (no false finding in the whole "
                   "report, at 95%) or bh (Benjamini-Hochberg: at most 5% of findings false).")
@click.option("--pairs", "pairs_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Official verification pairs (LFW's pairs.txt); found in the dataset folder if there.")
@click.option("--max-requests", type=click.IntRange(min=1), help="Budget of API requests (cloud targets).")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Gate the results on this policy (TOML); exit code 1 when a rule fails.")
@click.option("--baseline", "baseline_path", type=click.Path(exists=True, path_type=Path),
              help="results.json of the last release, for the policy's baseline rules.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path),
              help="With --policy: write the verdict as JUnit XML here.")
@click.option("--no-report", is_flag=True, help="Skip the HTML and PDF report ('audit report' renders it later).")
@click.option("--no-faces", is_flag=True, help="Leave every face image out of the report.")
@cache_options
@face_options
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def run(target_spec, target_option, dataset_dir, out_dir, group_by, probes, epochs, image_size, batch_size,
        validate_every, average_identities, generator_channels, identity_loss, device, seed, n_resamples, correction,
        pairs_file, max_requests, policy_path, baseline_path,
        junit_path, no_report, no_faces, cache_path, no_cache, detector, upsample, min_score, workers, quiet):
    """Audit a face model for demographic bias: embed, probe, report, gate.

    Embeds every image of the dataset through the target (cached), trains
    the inversion generator and measures per group how well faces are
    reconstructed, measures each group's room in the embedding space and
    its verification error rates, and writes OUT/results.json,
    OUT/groups.csv and OUT/report.html + report.pdf.  Killed and started
    again, it resumes from the cache and the last checkpoint.

    \b
    Examples:
      audit run --target dlib --dataset balanced/ --out runs/dlib --epochs 20
      audit run --target clarifai --dataset balanced/ --policy examples/policy.toml
      audit run --dataset lfw/ --probes volume,verification
    """
    config = RunConfig(
        dataset_dir=dataset_dir, out_dir=out_dir, target_spec=target_spec, target_options=tuple(target_option),
        group_by=parse_group_by(group_by), probes=tuple(p.strip() for p in probes.split(",") if p.strip()),
        face_config=make_face_config(detector, upsample, min_score), cache_path=cache_path,
        use_cache=not no_cache, workers=workers, seed=seed, epochs=epochs, image_size=int(image_size),
        batch_size=batch_size, validate_every=validate_every, average_identities=average_identities,
        generator_channels=generator_channels, identity_loss=identity_loss, n_resamples=n_resamples, correction=correction, pairs_file=pairs_file,
        report=not no_report, no_faces=no_faces, policy_path=policy_path, baseline_path=baseline_path,
        max_requests=max_requests, device=device, show_progress=not quiet,
        command_line=shlex.join(["audit", *sys.argv[1:]]))
    outcome = run_audit(config)
    click.echo(f"Results: {outcome.out_dir / 'results.json'}")
    for kind, path in outcome.report_files.items():
        click.echo(f"Report ({kind}): {path}")
    if outcome.verdict is not None:
        from audit.gate import format_verdict_table, verdict_to_junit

        click.echo(format_verdict_table(outcome.verdict))
        if junit_path is not None:
            junit_path.parent.mkdir(parents=True, exist_ok=True)
            junit_path.write_text(verdict_to_junit(outcome.verdict), encoding="utf-8")
        sys.exit(outcome.exit_code)

"""Every command that reads a case's inputs, run over them, with the checks each command's promise needs.

A dataset goes through ``dataset describe``, ``embed``, ``run``, ``dataset
balance``, ``gate`` and (for a few cases) ``report``; an import source
through ``dataset import`` into a new folder and over an earlier import;
a policy and a results file through ``gate`` and ``report``; a cache
through ``embed``.  Outputs that exist before a command (an earlier run, an
earlier import, an earlier export) must survive a failed command intact.
The CSV reports (``detections.csv``, ``groups.csv``, ``--failures``), the
JUnit file and the report are checked for what a hostile label could inject.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from audit.gate import MARKDOWN_COLUMNS
from audit.sinks import csv_value, terminal_text
from tests.corpus.cases import Case, Inputs
from tests.corpus.datasets import HOSTILE_LABELS, face_dataset, folders_source
from tests.corpus.harness import (DATA_LOSS, INJECTION, SILENT_DROP, CorpusRunner, Run, describe_counts,
                                  formula_cells, junit_problem, markdown_problem, read_csv, report_problem,
                                  source_files)

TARGET = ["--target-option", "engine=dlib", "--workers", "1"]
FAST = ["--resamples", "100", "-q", *TARGET]
RUN_FAST = ["--probes", "detection", "--no-report", *FAST]
#: A tiny generator where a case trains one: the whole audit in seconds.
TRAIN = ["--probes", "detection,inversion,volume,verification,attributes", "--epochs", "1", "--generator-channels", "16",
         "--batch-size", "16", "--no-report", *FAST]
POLICY = '[[rule]]\nid = "detection"\nmetric = "detection.failure_rate"\ngrouping = "race"\nmax = 1.0\n'
#: A rule against an earlier run: a results file of a case is read as that earlier run (--baseline).
BASELINE_POLICY = ('[[rule]]\nid = "no-worse"\nmetric = "detection.failure_rate"\ngrouping = "race"\n'
                   'baseline = { max_worsening = 0.0 }\n')
OLD = "an earlier output, which a failed command must leave as it is\n"
STATUSES = ("ok", "no_face", "error")


@dataclass(frozen=True)
class Baseline:
    """Clean artifacts, made once per session, that cases start from (as earlier outputs, or inputs)."""

    dataset: Path
    run: Path
    policy: Path
    balanced: Path
    imported: Path

    @property
    def results(self) -> dict:
        return json.loads((self.run / "results.json").read_text())


def make_baseline(root: Path) -> Baseline:
    from click.testing import CliRunner

    from audit.cli import cli

    def invoke(*args) -> None:
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output

    dataset = face_dataset(root / "dataset", people=4, per_person=1)
    invoke("run", "--dataset", dataset, "--out", root / "run", *RUN_FAST)
    policy = root / "policy.toml"
    policy.write_text(POLICY)
    invoke("dataset", "balance", dataset, root / "balanced", "--by", "race", "--per-group", "1")
    src, attributes = folders_source(root / "source", people=2)
    invoke("dataset", "import", "folders", src, root / "imported", "--attributes", attributes)
    return Baseline(dataset=dataset, run=root / "run", policy=policy, balanced=root / "balanced",
                    imported=root / "imported")


def exercise(case: Case, root: Path, baseline: Baseline) -> list[str]:
    """Build ``case`` in ``root``, run every command that reads it, return every problem found."""
    root.mkdir(parents=True, exist_ok=True)
    runner = CorpusRunner(case.name, root)
    inputs = case.make(root)
    if inputs.dataset is not None:
        _dataset_commands(runner, inputs, baseline)
    if inputs.source is not None:
        _import_commands(runner, inputs, baseline)
    if inputs.import_into is not None:
        _import_into(runner, inputs)
    if inputs.run_into is not None:
        _run_into(runner, inputs)
    if inputs.replaced is not None:
        _replaced_commands(runner, inputs)
    if inputs.archive is not None:
        _fetch_commands(runner, inputs)
    if inputs.policy is not None:
        _gate(runner, inputs, _copy(baseline.run, root / "run"), inputs.policy)
    if inputs.results is not None:
        _results_commands(runner, inputs, baseline)
    if inputs.cache is not None:
        _cache_commands(runner, inputs, baseline)
    if inputs.generator is not None:
        _generator_commands(runner, inputs, baseline)
    if inputs.commands:
        _command_lines(runner, inputs, baseline)
    return runner.report()


# --------------------------------------------------------------------------- helpers

def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def _old_file(path: Path) -> Path:
    path.write_text(OLD)
    return path


def _expect(runner: CorpusRunner, run: Run, inputs: Inputs, command: str) -> None:
    expected = inputs.expected_exit.get(command)
    if expected is not None:
        runner.expect(run, run.exit_code == expected, f"exit {run.exit_code}, expected {expected}: "
                                                      f"{run.output.strip()[-300:]}")
    words = inputs.expected_words.get(command)
    if words is not None:
        runner.expect(run, words in run.output, f"{words!r} not in the output: {run.output.strip()[-300:]}")


def _usable_ids(dataset: Path) -> list[str] | None:
    from audit.data.manifest import load_dataset
    from audit.errors import AuditError

    try:
        return load_dataset(dataset).table["image_id"].tolist()
    except AuditError:
        return None


# --------------------------------------------------------------------------- datasets

def _dataset_commands(runner: CorpusRunner, inputs: Inputs, baseline: Baseline) -> None:
    root, dataset = runner.root, inputs.dataset
    usable = _usable_ids(dataset)

    described = runner.invoke("describe", ["dataset", "describe", dataset, "--json"])
    _expect(runner, described, inputs, "describe")
    excluded_ids: set[str] = set()
    if described.exit_code == 0:
        counts = describe_counts(described.output)
        on_load = counts["exclusions"]["on_load"]
        if inputs.expected_rows is not None:
            accounted = counts["n_images"] + on_load["total"]
            runner.expect(described, accounted == inputs.expected_rows,
                          f"{counts['n_images']} usable + {on_load['total']} excluded = {accounted} of "
                          f"{inputs.expected_rows} manifest rows", kind=SILENT_DROP)
        from audit.data.manifest import load_dataset

        excluded_ids = set(load_dataset(dataset).exclusions["path"].astype(str))
    if "describe-group-by" in inputs.expected_exit:
        grouped = runner.invoke("describe-group-by", ["dataset", "describe", dataset, "--group-by", "race"])
        _expect(runner, grouped, inputs, "describe-group-by")

    export, failures = _old_file(root / "vectors.csv"), _old_file(root / "failures.csv")
    embedded = runner.invoke("embed", ["embed", "--dataset", dataset, "--export", export, "--failures", failures,
                                       "-q", *TARGET], keep_on_failure=[export, failures])
    _expect(runner, embedded, inputs, "embed")
    if embedded.exit_code == 0:
        _check_csv_reports(runner, embedded, [failures])
    if embedded.exit_code == 0 and usable is not None:
        vectors = [row["image_id"] for row in read_csv(export)]       # the export keeps ids verbatim
        failed = {csv_value(row["image_id"]): row for row in read_csv(failures)}
        runner.expect(embedded, sorted(vectors + list(failed)) == sorted(usable) and not set(vectors) & set(failed),
                      f"vectors {sorted(vectors)} + named failures {sorted(failed)} != usable images "
                      f"{sorted(usable)}", kind=SILENT_DROP)
        for image_id, row in failed.items():
            runner.expect(embedded, row["status"] == "no_face" or bool(row["reason"]),
                          f"{image_id}: status {row['status']} without a reason", kind=SILENT_DROP)
            if terminal_text(image_id) not in embedded.output:
                runner.expect(embedded, False, f"{image_id} got no vector and is not named", kind=SILENT_DROP)

    out = _copy(baseline.run, root / "run")
    ran = runner.invoke("run", ["run", "--dataset", dataset, "--out", out, *(TRAIN if inputs.train else RUN_FAST),
                                *inputs.run_options], keep_on_failure=[out])
    _expect(runner, ran, inputs, "run")
    if ran.exit_code == 0:
        _check_run(runner, ran, inputs, out, usable, excluded_ids)
        junit, markdown = _old_file(root / "gate.xml"), _old_file(root / "gate.md")
        gated = runner.invoke("gate", ["gate", out, "--policy", baseline.policy, "--junit", junit,
                                       "--markdown", markdown], keep_on_failure=[junit, markdown])
        runner.expect(gated, gated.exit_code in (0, 1, 2), f"gate exit {gated.exit_code}")
        if gated.exit_code in (0, 1):
            _check_junit(runner, gated, junit)
            _check_markdown(runner, gated, markdown)
        if inputs.report:
            (out / "report.html").write_text(OLD)
            rendered = runner.invoke("report", ["report", out, "--format", "html"], keep_on_failure=[out])
            runner.expect(rendered, rendered.exit_code == 0 and (out / "report.html").read_text() != OLD,
                          f"report exit {rendered.exit_code}: {rendered.output.strip()[-300:]}")
            if rendered.exit_code == 0:
                _check_report(runner, rendered, out)

    balanced = _copy(baseline.balanced, root / "balanced")
    made = runner.invoke("balance", ["dataset", "balance", dataset, balanced, "--by", "race", "--per-group", "1",
                                     "--allow-smaller", "--overwrite"], keep_on_failure=[balanced])
    _expect(runner, made, inputs, "balance")
    if made.exit_code == 0:
        check = _usable_ids(balanced)
        runner.expect(made, check is not None and len(check) >= 1, "the balanced dataset does not load")


def _check_csv_reports(runner: CorpusRunner, run: Run, paths: list[Path]) -> None:
    """No cell of a CSV report that a spreadsheet would run as a formula."""
    for path in paths:
        if path.is_file() and (cells := formula_cells(path)):
            runner.expect(run, False, f"{path.name} has cells a spreadsheet runs: {cells[:3]!r}", kind=INJECTION)


def _check_junit(runner: CorpusRunner, run: Run, junit: Path) -> None:
    if (problem := junit_problem(junit)) is not None:
        runner.expect(run, False, problem, kind=INJECTION)


def _check_markdown(runner: CorpusRunner, run: Run, markdown: Path) -> None:
    if (problem := markdown_problem(markdown, len(MARKDOWN_COLUMNS))) is not None:
        runner.expect(run, False, problem, kind=INJECTION)


def _check_report(runner: CorpusRunner, run: Run, out: Path) -> None:
    html = (out / "report.html").read_text(encoding="utf-8")
    if (problem := report_problem(html, HOSTILE_LABELS.values())) is not None:
        runner.expect(run, False, problem, kind=INJECTION)


def _check_run(runner: CorpusRunner, ran: Run, inputs: Inputs, out: Path, usable: list[str] | None,
               excluded: set[str]) -> None:
    _check_csv_reports(runner, ran, [out / "detections.csv", out / "groups.csv", out / "inversion_samples.csv"])
    detections = [{key: csv_value(value) for key, value in row.items()} for row in read_csv(out / "detections.csv")]
    ids = [row["image_id"] for row in detections]
    if usable is not None:
        runner.expect(ran, sorted(ids) == sorted(usable), f"detections.csv has {len(ids)} images, the dataset "
                                                          f"{len(usable)} usable ones", kind=SILENT_DROP)
    for row in detections:
        runner.expect(ran, row["status"] in STATUSES and (row["status"] == "ok" or bool(row["reason"])),
                      f"{row['image_id']}: status {row['status']!r} reason {row['reason']!r}", kind=SILENT_DROP)
    results = json.loads((out / "results.json").read_text())
    dataset = results["dataset"]
    if inputs.expected_rows is not None:
        runner.expect(ran, dataset["n_images"] + dataset["n_excluded"] == inputs.expected_rows,
                      f"results.json: {dataset['n_images']} images + {dataset['n_excluded']} excluded != "
                      f"{inputs.expected_rows} rows", kind=SILENT_DROP)
    for figure in results.get("figures", []):
        if figure.get("probe") != "volume":
            continue
        low, high = figure.get("ci_low"), figure.get("ci_high")
        runner.expect(ran, low is None or high is None or high > low,
                      f"volume figure {figure.get('metric')} of {figure.get('group')}: a zero-width interval "
                      f"[{low}, {high}] claims it exact")
    status = {row["image_id"]: row["status"] for row in detections}
    for image_id, expected in inputs.expected_status.items():
        got = "excluded" if image_id in excluded else status.get(image_id, "missing")
        runner.expect(ran, got == expected, f"{image_id!r}: {got}, expected {expected}")


# --------------------------------------------------------------------------- imports

def _import_commands(runner: CorpusRunner, inputs: Inputs, baseline: Baseline) -> None:
    kind, src, options = inputs.source
    root = runner.root
    fresh = root / "imported"
    made = runner.invoke("import", ["dataset", "import", kind, src, fresh, *options], outputs=[fresh])
    _expect(runner, made, inputs, "import")
    if made.exit_code == 0:
        _check_import(runner, made, kind, src, fresh)
    previous = _copy(baseline.imported, root / "previous")
    again = runner.invoke("import-overwrite", ["dataset", "import", kind, src, previous, *options, "--overwrite",
                                               "--copy"], keep_on_failure=[previous])
    if again.exit_code == 0:
        _check_import(runner, again, kind, src, previous)


def _replaced_commands(runner: CorpusRunner, inputs: Inputs) -> None:
    """Embed, replace one image behind the cache's back, embed again: the new face gets its own vector."""
    root = runner.root
    dataset, image_id, replace_it = inputs.replaced
    cache = root / "own-cache.sqlite"      # not the corpus's shared cache: the old vector must be this run's
    exports = [root / "first.csv", root / "second.csv"]
    side = [cache.with_name(cache.name + s) for s in ("", "-wal", "-shm", "-journal")]
    vectors = []
    for k, export in enumerate(exports):
        if k:
            replace_it(dataset)
        embedded = runner.invoke("embed-replaced", ["embed", "--dataset", dataset, "--export", export, "--cache",
                                                    cache, "-q", *TARGET], outputs=[export, *side])
        runner.expect(embedded, embedded.exit_code == 0, f"exit {embedded.exit_code}: {embedded.output[-300:]}")
        rows = {row["image_id"]: row for row in read_csv(export)} if export.is_file() else {}
        vectors.append({k: v for k, v in rows.get(image_id, {}).items() if k != "image_id"})
        if k:
            runner.expect(embedded, "1 computed, 3 from the cache" in embedded.output,
                          f"the replaced image was not embedded again: {embedded.output.strip()[-200:]}",
                          kind=SILENT_DROP)
    runner.expect(runner.runs[-1], vectors[0] != vectors[1], f"{image_id}: the old face's vector after the swap",
                  kind=SILENT_DROP)


def _run_into(runner: CorpusRunner, inputs: Inputs) -> None:
    dataset, out = inputs.run_into
    ran = runner.invoke("run-into", ["run", "--dataset", dataset, "--out", out, *RUN_FAST], outputs=[out],
                        keep_on_failure=[out, dataset])
    _expect(runner, ran, inputs, "run-into")
    if ran.exit_code == 0:
        runner.expect(ran, (out / "results.json").is_file(), "no results.json after the run")


def _import_into(runner: CorpusRunner, inputs: Inputs) -> None:
    kind, src, dest, options = inputs.import_into
    before = _usable_ids(dest)
    made = runner.invoke("import-into", ["dataset", "import", kind, src, dest, *options], keep_on_failure=[dest])
    _expect(runner, made, inputs, "import-into")
    after = _usable_ids(dest)
    runner.expect(made, after is not None and len(after) == len(before or ()),
                  f"the destination had {len(before or ())} usable images, now {after}", kind=DATA_LOSS)


def _check_import(runner: CorpusRunner, run: Run, kind: str, src: Path, dest: Path) -> None:
    manifest = read_csv(dest / "manifest.csv")
    exclusions = read_csv(dest / "exclusions.csv")
    for row in exclusions:
        runner.expect(run, bool(row["reason"]), f"exclusion {row} without a reason", kind=SILENT_DROP)
    if kind in ("folders", "utkface", "lfw"):
        prefix = "images_deepfunneled/" if kind == "lfw" else ""
        files = {prefix + f for f in source_files(src / prefix if prefix else src)}
        listed = {prefix + row["path"].split("/", 1)[1] for row in manifest} | {row["path"] for row in exclusions}
        runner.expect(run, files <= listed, f"source files neither imported nor excluded: {sorted(files - listed)}",
                      kind=SILENT_DROP)
    if kind == "fairface":
        label = src / "fairface_label_train.csv"
        records = len([line for line in label.read_text().splitlines()[1:] if line.strip()])
        from_labels = [row for row in exclusions if row["row"].startswith(label.name)]
        runner.expect(run, len(manifest) + len(from_labels) == records,
                      f"{len(manifest)} imported + {len(from_labels)} excluded != {records} label rows",
                      kind=SILENT_DROP)
    loaded = _usable_ids(dest)
    runner.expect(run, loaded is not None, "the imported dataset does not load")


def _fetch_commands(runner: CorpusRunner, inputs: Inputs) -> None:
    """``audit dataset fetch lfw`` of the case's archive from a file:// mirror: imported, or refused whole."""
    archive, md5 = inputs.archive
    dest, source = runner.root / "fetched", runner.root / "fetched-source"
    fetched = runner.invoke("fetch", ["dataset", "fetch", "lfw", dest, "--url", archive.as_uri(), "--md5", md5, "-q"],
                            outputs=[dest, source])
    _expect(runner, fetched, inputs, "fetch")
    if fetched.exit_code == 0:
        runner.expect(fetched, _usable_ids(dest) is not None, "the fetched dataset does not load")
    else:
        runner.expect(fetched, not dest.exists(), "a refused archive left a dataset folder", kind=DATA_LOSS)
        unpacked = [p for p in source.rglob("*") if p.is_file() and p.suffix == ".jpg"] if source.exists() else []
        runner.expect(fetched, unpacked == [], f"a refused archive left files: {unpacked[:3]}")


# --------------------------------------------------------------------------- gate, report, caches

def _gate(runner: CorpusRunner, inputs: Inputs, run_folder: Path, policy: Path) -> Run:
    junit, markdown = _old_file(runner.root / "gate.xml"), _old_file(runner.root / "gate.md")
    gated = runner.invoke("gate", ["gate", run_folder, "--policy", policy, "--junit", junit,
                                   "--markdown", markdown], keep_on_failure=[junit, markdown])
    _expect(runner, gated, inputs, "gate")
    if gated.exit_code in (0, 1):
        runner.expect(gated, junit.read_text() != OLD, "the JUnit file was not written", kind=DATA_LOSS)
        runner.expect(gated, markdown.read_text() != OLD, "the Markdown verdict was not written", kind=DATA_LOSS)
        _check_junit(runner, gated, junit)
        _check_markdown(runner, gated, markdown)
    return gated


def _results_commands(runner: CorpusRunner, inputs: Inputs, baseline: Baseline) -> None:
    out = _copy(baseline.run, runner.root / "run")
    text = inputs.results(baseline.results)
    (out / "results.json").write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    _gate(runner, inputs, out, baseline.policy)
    (out / "report.html").write_text(OLD)
    rendered = runner.invoke("report", ["report", out, "--format", "html"], keep_on_failure=[out])
    _expect(runner, rendered, inputs, "report")
    if rendered.exit_code == 0:
        _check_report(runner, rendered, out)
    now = _copy(baseline.run, runner.root / "now")
    policy = runner.root / "baseline-policy.toml"
    policy.write_text(BASELINE_POLICY)
    junit = _old_file(runner.root / "baseline-gate.xml")
    compared = runner.invoke("baseline", ["gate", now, "--policy", policy, "--baseline", out / "results.json",
                                          "--junit", junit], keep_on_failure=[junit, now])
    _expect(runner, compared, inputs, "baseline")


def _cache_commands(runner: CorpusRunner, inputs: Inputs, baseline: Baseline) -> None:
    dataset = _copy(baseline.dataset, runner.root / "dataset")
    cache = inputs.cache
    side = [cache.with_name(cache.name + suffix) for suffix in ("-wal", "-shm", "-journal")]
    embedded = runner.invoke("embed", ["embed", "--dataset", dataset, "--cache", cache, "-q", *TARGET],
                             outputs=[cache, *side] if inputs.expected_exit.get("embed") == 0 else side,
                             keep_on_failure=[cache])
    _expect(runner, embedded, inputs, "embed")


# --------------------------------------------------------------------------- generators, command lines

def _generator_commands(runner: CorpusRunner, inputs: Inputs, baseline: Baseline) -> None:
    """'audit run --generator GEN' on the clean dataset: a damaged folder is refused before any embedding."""
    out = _copy(baseline.run, runner.root / "run")
    ran = runner.invoke("run-generator", ["run", "--dataset", baseline.dataset, "--generator", inputs.generator,
                                          "--out", out, "--probes", "detection,inversion", "--no-report", *FAST],
                        keep_on_failure=[out, inputs.generator])
    _expect(runner, ran, inputs, "run-generator")


def _command_lines(runner: CorpusRunner, inputs: Inputs, baseline: Baseline) -> None:
    """The case's own command lines, over an empty folder for a dataset and a copy of the session's clean run."""
    root = runner.root
    dataset = root / "empty"
    dataset.mkdir()
    results = _copy(baseline.run, root / "results")
    for name, args in inputs.commands.items():
        out = root / "out"
        places = {"{DATASET}": dataset, "{OUT}": out, "{RESULTS}": results, "{POLICY}": baseline.policy}
        ran = runner.invoke(name, [places.get(a, a) for a in args], outputs=[out],
                            keep_on_failure=[dataset, results])
        _expect(runner, ran, inputs, name)

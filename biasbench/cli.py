"""`bench`: run, results, report, ls, data, zoo, status — the command line of biasbench."""

from __future__ import annotations

import contextlib
import os
import sys

# Idle OpenMP threads spin briefly, then sleep: never spinning (OMP_WAIT_POLICY=PASSIVE) made the many
# small parallel regions of a backward pass on 32-px images wait on wake-ups (BackSelect and PGD took
# twice as long with 2 threads as with 1), while spinning for long (OpenMP's default) slowed the demo's
# jobs many times over beside other processes' work (benchmarks/shared_machine.py). GNU libgomp counts
# the spin in iterations (10,000: microseconds), LLVM/Intel libomp in milliseconds. OpenMP reads these
# once, when torch loads, so they are set here, before anything imports torch; explicit values win.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
os.environ.setdefault("KMP_BLOCKTIME", "1")
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup


class _Commands(TyperGroup):
    """Every command ends an error of ours the same way: one ``error: …`` line on stderr (no
    traceback; control characters as escapes) and the exit code its class names."""

    def invoke(self, ctx: Any) -> Any:
        from biasbench.core.errors import BiasbenchError

        try:
            return super().invoke(ctx)
        except BiasbenchError as e:
            _fail(str(e), e.exit_code)


app = typer.Typer(
    cls=_Commands,
    help="Benchmark image-classifier checkpoints for their biases and their generalization.\n\n"
    "Start with `bench run` (the demo zoo on the synthetic world), then `bench report`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ls_app = typer.Typer(
    help="List checkpoints, metrics, datasets, weight sources, architecture families or label spaces.",
    no_args_is_help=True,
)
data_app = typer.Typer(help="Fetch and verify datasets (checksum-verified downloads).", no_args_is_help=True)
zoo_app = typer.Typer(help="The demo mini zoo: reproduce its checkpoints.", no_args_is_help=True)
app.add_typer(ls_app, name="ls")
app.add_typer(data_app, name="data")
app.add_typer(zoo_app, name="zoo")


def _consoles() -> tuple[Console, Console]:
    """stdout and stderr consoles: no emoji codes (``root:x:0:0`` stays as typed), and error lines are
    never wrapped (a command or a path in a message must stay copyable)."""
    return Console(emoji=False), Console(stderr=True, emoji=False, highlight=False, soft_wrap=True)


out, err = _consoles()


@app.callback()
def _invocation() -> None:
    """Fresh consoles for each invocation: a Console fixes its width from ``$COLUMNS`` when it is made,
    so one made for an earlier invocation in the same process (the Python API, tests) would keep that
    terminal's width."""
    global out, err
    out, err = _consoles()


DEFAULT_DB = "bench.duckdb"
DbOpt = Annotated[
    Path, typer.Option("--db", help="The results database (DuckDB file).", envvar="BIASBENCH_DB")
]
LockOpt = Annotated[
    Path | None,
    typer.Option(
        "--lock",
        help="The lock file (default: <registry>.lock beside a registry file; ./<name>.lock for a shipped "
        "registry).",
        show_default=False,
    ),
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root", help="Where datasets live (default: $BIASBENCH_DATA or ./data).", show_default=False
    ),
]


def _row(table: Table, *cells: Any) -> None:
    """``table.add_row`` with every cell shown as text (ids, paths and error messages are no markup)."""
    from rich.text import Text

    from biasbench.core.names import printable_lines

    table.add_row(*(c if isinstance(c, Text) else Text(printable_lines(c)) for c in cells))


def _plain(value: Any) -> str:
    """``value`` as terminal-safe text (control characters shown as escapes, line breaks kept)."""
    from biasbench.core.names import printable_lines

    return printable_lines(value)


def _esc(value: Any) -> str:
    """``value`` as text to embed in a markup string (a ``[`` in a path or message stays a ``[``)."""
    from rich.markup import escape

    from biasbench.core.names import printable_lines

    return escape(printable_lines(value))


def _fail(msg: str, code: int = 2) -> NoReturn:
    """One clear error line (the message is printed as text: a key like ``[/fc.weight]`` is no markup,
    and control characters show as escapes)."""
    from rich.markup import escape

    from biasbench.core.names import printable_lines

    err.print(f"[red]error:[/red] {escape(printable_lines(msg))}")
    raise SystemExit(code)


@contextlib.contextmanager
def _os_errors() -> Iterator[None]:
    """An error of the operating system (a permission, a full disk) ends the command like ours."""
    from biasbench.core.errors import BiasbenchError, StateError

    try:
        yield
    except BiasbenchError:
        raise
    except OSError as e:
        raise StateError(str(e)) from e


def _data_root(p: Path | None) -> Path:
    from biasbench.core.paths import default_data_root

    return p if p is not None else default_data_root()


@app.command()
def run(
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="Registry names (demo, efficientnet-lite), registry .toml files, timm model names, or "
            "ARCH@WEIGHTS pairs. None: the demo registry.",
            show_default=False,
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option("--metrics", "-m", help="Comma-separated metric names (default: all installed)."),
    ] = None,
    db: DbOpt = Path(DEFAULT_DB),
    data_root: DataRootOpt = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Download and decode cache (default: $BIASBENCH_CACHE or ~/.cache/biasbench)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu or cuda[:N].")] = "auto",
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Start batch size (halved on CUDA out-of-memory). Default: from the input size, 256 at "
            "32 px (the demo), 64 from 64 px up.",
            min=1,
            max=65536,
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and its cost; compute nothing.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="--dry-run: also list every job (a table).")
    ] = False,
    history: Annotated[
        Path | None,
        typer.Option("--history", help="--dry-run: estimate times from the jobs stored in this database."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute jobs that are already stored.")] = False,
    trust_checkpoints: Annotated[
        bool,
        typer.Option(
            "--trust-checkpoints", help="Allow pickled objects in checkpoint files (runs their code!)."
        ),
    ] = False,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Metric parameter METRIC.KEY=VALUE (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for every random choice of the metrics.")] = 0,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            help="Only checkpoints whose tag KEY equals VALUE: KEY=VALUE, e.g. category=adversarial_training "
            "(repeatable: different keys must all match, one key's values are alternatives).",
        ),
    ] = None,
    allow_unpinned: Annotated[
        bool,
        typer.Option(
            "--allow-unpinned",
            help="Run checkpoints whose weights no sha256 or lock file pins, recording the hashes of what is "
            "downloaded in the lock file (trust on first use).",
        ),
    ] = False,
    lock_file: LockOpt = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads for the models (default: $BIASBENCH_THREADS, else every CPU this process may "
            "use). On a machine shared with other jobs, 1 is often fastest.",
            min=1,
            max=1024,
            show_default=False,
        ),
    ] = None,
    group: Annotated[
        str,
        typer.Option(
            "--group",
            help="Dataset-major execution: keep K checkpoints with the same preprocessing loaded and pass "
            "each decoded batch through all K (metrics that share batches; results identical). auto: K "
            "from free device memory. 1: checkpoint-major.",
        ),
    ] = "1",
    cache_budget: Annotated[
        str | None,
        typer.Option(
            "--cache-budget",
            help="Disk the decoded-dataset cache may fill (e.g. 200G); a set that does not fit is streamed "
            "(decoded batch by batch, bounded memory). Default: $BIASBENCH_CACHE_BUDGET, else half the "
            "free disk.",
            show_default=False,
        ),
    ] = None,
    compile_models: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Run the models' inference forwards through torch.compile (inductor); gradient and float64 "
            "passes stay eager. Results equal eager ones to ~1e-4 in the logits. Off by default: see the "
            "README for when it pays.",
        ),
    ] = False,
    workers: Annotated[
        str,
        typer.Option(
            help="Worker processes that share the checkpoints (on the CPU, one checkpoint at a time each, "
            "the threads divided among them; results identical). auto: as many as the run's threads, at "
            "most 4 ($BIASBENCH_WORKERS sets it); 1 on CUDA, with --group or --compile, or under 150 k images × "
            "conditions. 1: this process.",
        ),
    ] = "auto",
    executor: Annotated[
        str,
        typer.Option(
            help="serial (this process) or ray: one Ray task per checkpoint on a Ray cluster's workers, this "
            "process the only writer of the database (needs Ray: biasbench's ray extra)."
        ),
    ] = "serial",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="--executor ray: the cluster, auto (started on this machine with `ray start`) or HOST:PORT. "
            "Default: $RAY_ADDRESS, else a one-machine Ray for this run.",
            show_default=False,
        ),
    ] = None,
    gpus_per_task: Annotated[
        float, typer.Option(help="--executor ray: GPUs each task (checkpoint) holds.", min=0)
    ] = 0.0,
    max_retries: Annotated[
        int,
        typer.Option(
            help="--executor ray: retries of a task whose worker died (a job's error is no retry).", min=0
        ),
    ] = 2,
) -> None:
    """Benchmark checkpoints × metrics and store every result; skips what is already stored."""
    from biasbench.harness import process_start
    from biasbench.harness.environment import FreeCpus

    cpus = FreeCpus()  # the CPUs free over this run's start: its threads (a fork server's CPU is its own)
    requested_workers = process_start.parse_workers(workers)
    if not dry_run and executor == "serial":
        if process_start.may_fork_workers(
            requested_workers, device=device, group=group, compile=compile_models
        ):
            process_start.warm()  # the workers' server imports torch beside this process's import and plan
    from biasbench.core.streaming import parse_size
    from biasbench.harness import session
    from biasbench.harness.grouping import parse_group
    from biasbench.harness.status import PlanStatus

    opts = session.RunOptions(
        data_root=data_root,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        force=force,
        trust_checkpoints=trust_checkpoints,
        seed=seed,
        where=tuple(where or ()),
        allow_unpinned=allow_unpinned,
        lock_file=lock_file,
        threads=threads,
        group=parse_group(group),
        cache_budget=parse_size(cache_budget) if cache_budget is not None else None,
        compile=compile_models,
        workers=requested_workers,
    )
    names = (
        None if metrics is None else list(dict.fromkeys(m.strip() for m in metrics.split(",") if m.strip()))
    )
    metric_objs = session.build_metrics(names, session.parse_params(param or []))
    specs = session.resolve(targets or ["demo"], opts.where)
    dev = session.prepare_torch(opts, cpus)
    specs = session.pin(specs, opts, dry_run=dry_run, note=lambda m: err.print(m, markup=False))
    if compile_models and not dry_run:
        from biasbench.harness.compiling import check_available

        check_available(dev)
    ray_opts = _ray_options(executor, ray_address, gpus_per_task, max_retries, force)
    if dry_run:
        plans, lines = session.dry_run(db, specs, metric_objs, opts, dev, history)
        _print_plan(plans, verbose)
        for line in lines:
            out.print(_plain(line), markup=False, highlight=False, soft_wrap=True)
        return
    plans, summary = session.plan_and_execute(
        db,
        specs,
        metric_objs,
        opts,
        dev,
        console=err,
        ray_opts=ray_opts,
        started=lambda run_id, n_todo, n_stored, n_err: err.print(
            f"run {run_id}: {n_todo} jobs to compute, {n_stored} stored"
            + (f", {n_err} that cannot run (recorded as failures)" if n_err else "")
            + f", on {_describe(dev)}",
            markup=False,
        ),
    )
    if summary is None:
        n_stored = sum(j.status == PlanStatus.STORED for cp in plans for j in cp.jobs)
        out.print(
            f"Nothing to compute: all {n_stored} jobs are already stored in {db} (use --force to recompute).",
            markup=False,
        )
        _next_steps(db)
        return
    _print_summary(summary)
    _next_steps(db)
    if summary.failed:
        err.print(
            f"[red]{summary.failed} job(s) failed[/red]; details: `bench status --db {_esc(db)}`. "
            "Every other result is stored."
        )
        raise typer.Exit(1)


def _describe(dev: Any) -> str:
    from biasbench.harness.environment import describe_device

    return describe_device(dev)


def _ray_options(executor: str, address: str | None, gpus: float, retries: int, force: bool) -> Any:
    """``--executor`` and its Ray options, checked (Ray importable); ``None`` for the serial executor."""
    if executor == "serial":
        return None
    if executor != "ray":
        _fail(f"--executor {executor!r}: use serial or ray")
    if force:
        _fail(
            "--force is not supported with --executor ray (stored jobs are kept when shards merge); run serially"
        )
    from biasbench.harness.ray_executor import RayOptions, import_ray

    import_ray()
    return RayOptions(address, gpus, retries)


def _print_plan(plans: list[Any], verbose: bool) -> None:
    """The per-job table (``--dry-run --verbose``)."""
    if not verbose:
        return
    t = Table(title="plan")
    for c in ("checkpoint", "metric", "status", "datasets", "config_hash", "note"):
        t.add_column(c)
    for cp in plans:
        for j in cp.jobs:
            ds = ", ".join(rd.request.name for rd in j.datasets.values())
            note = j.reason or ""
            _row(t, cp.spec.id, j.metric.name, j.status, ds, j.key.config_hash if j.key else "", note)
    out.print(t)


def _print_summary(summary: Any) -> None:
    from rich.text import Text

    t = Table(title="summary")
    for c in ("checkpoint", "metric", "status", "seconds", "result"):
        t.add_column(c)
    colors = {"done": "green", "failed": "red", "stored": "dim", "n/a": "dim"}
    for o in summary.outcomes:
        _row(
            t,
            o.checkpoint,
            o.metric,
            Text(o.status, style=colors.get(o.status, "")),
            f"{o.seconds:.1f}" if o.seconds else "",
            o.summary[:80],
        )
    out.print(t)


def _next_steps(db: Path) -> None:
    flag = "" if str(db) == DEFAULT_DB else f" --db {db}"
    out.print(
        f"Results are in [bold]{_esc(db.resolve())}[/bold]. Next: `bench report{_esc(flag)}` (correlations) "
        f"or `bench results{_esc(flag)}`."
    )


@app.command()
def results(
    db: DbOpt = Path(DEFAULT_DB),
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="Only these metrics (repeatable).")
    ] = None,
    checkpoint: Annotated[
        list[str] | None, typer.Option("--checkpoint", help="Only these checkpoints.")
    ] = None,
    all_versions: Annotated[
        bool, typer.Option("--all", help="Every stored job, not only the newest.")
    ] = False,
    recompute: Annotated[
        list[str] | None,
        typer.Option(
            "--recompute",
            help="METRIC.KEY=VALUE (repeatable): a metric's rows for another value of a parameter it "
            "recomputes from its stored per-item rows, no model (e.g. sis.tau=0.8, sis.q=0.1).",
        ),
    ] = None,
    sis_tau: Annotated[float | None, typer.Option("--sis-tau", hidden=True)] = None,
    sis_q: Annotated[float | None, typer.Option("--sis-q", hidden=True)] = None,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", help="Only these keys: KEY or METRIC.KEY, wildcards allowed (repeatable)."),
    ] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="One row per checkpoint, one column per metric[variant].key.")
    ] = False,
) -> None:
    """Print stored results: checkpoint, metric, key, value, n, and the variant (the parameters a
    metric's stored sets differ in) and datasets each row came from."""
    from biasbench.harness import session

    legacy = [f"sis.{k}={v}" for k, v in (("tau", sis_tau), ("q", sis_q)) if v is not None]  # the old flags
    changes = session.parse_recompute([*(recompute or []), *legacy])
    df = session.results(
        db, metrics=metric, checkpoints=checkpoint, latest=not all_versions, recompute=changes, keys=key
    )
    if wide:
        df = session.wide_results(df)
    if fmt == "table" and wide:
        t = Table()
        for c in df.columns:
            t.add_column(c, justify="left" if c == "checkpoint" else "right")
        for row in df.itertuples(index=False):
            _row(t, row[0], *(f"{v:.4g}" for v in row[1:]))
        out.print(t)
    elif fmt == "csv":
        from biasbench.reports.render import csv_text

        sys.stdout.write(csv_text(df))
    elif fmt == "json":
        sys.stdout.write(df.to_json(orient="records", indent=1) + "\n")
    elif fmt == "table":
        t = Table()
        for c in df.columns:
            t.add_column(c, justify="right" if c in ("value", "n") else "left")
        for row in df.itertuples(index=False):
            _row(
                t,
                row.checkpoint,
                row.metric,
                row.key,
                f"{row.value:.6g}",
                str(row.n),
                row.variant,
                row.datasets,
            )
        out.print(t)
    else:
        _fail(f"unknown format {fmt!r} (table, csv, json)")


def _csv_list(value: str | None) -> list[str] | None:
    return [k.strip() for k in value.split(",") if k.strip()] if value else None


def _check_out_path(path: Path | None, what: str, *, folder: bool = False) -> None:
    """A file to write needs its folder to exist (a typo must not become a new folder)."""
    if path is None:
        return
    where = path if folder else path.parent
    if not where.is_dir():
        _fail(f"{what}: the folder {where} does not exist (create it first)")
    if folder:
        if not os.access(where, os.W_OK | os.X_OK):
            _fail(f"{what}: the folder {where} is not writable")
        return
    if path.is_dir():
        _fail(f"{what}: {path} is a folder; give a file name")
    existed = path.exists()
    try:  # opened now, before the report is computed: a file that cannot be written fails first
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as e:
        _fail(f"{what}: cannot write {path}: {e.strerror or e}")
    if not existed:
        path.unlink(missing_ok=True)


@app.command()
def report(
    db: DbOpt = Path(DEFAULT_DB),
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="terminal (a rich table), md, html, csv, json or latex (booktabs)."
        ),
    ] = "terminal",
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the report here (default: stdout).")
    ] = None,
    keys: Annotated[
        str | None,
        typer.Option("--keys", help="Free exploration: correlate every pair of these metric.key columns."),
    ] = None,
    all_keys: Annotated[
        bool, typer.Option("--all", help="Free exploration: every pair of stored (non-constant) keys.")
    ] = False,
    bias: Annotated[
        str | None, typer.Option("--bias", help="Rows of the curated table (default: every declared bias).")
    ] = None,
    generalization: Annotated[
        str | None,
        typer.Option(
            "--generalization",
            help="Columns of the curated table (default: the declared ones, ood's aggregates).",
        ),
    ] = None,
    method: Annotated[str, typer.Option(help="spearman, pearson or kendall.")] = "spearman",
    correction: Annotated[
        str, typer.Option(help="Multiple-comparison correction of the p-values: holm, bh or none.")
    ] = "holm",
    control: Annotated[
        str | None,
        typer.Option(
            help="The ID-accuracy column of the partial correlation (default: ood.id, else accuracy.top1)."
        ),
    ] = None,
    category: Annotated[
        str, typer.Option(help="The checkpoint tag whose categories are left out one at a time.")
    ] = "category",
    colour_by: Annotated[
        str | None,
        typer.Option(
            "--colour-by", help="The checkpoint tag that colours the figures (default: --category)."
        ),
    ] = None,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.", min=100, max=1_000_000)] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    figure: Annotated[
        Path | None, typer.Option("--figure", help="Also write the heat map (PNG) here.")
    ] = None,
    figures: Annotated[
        Path | None,
        typer.Option("--figures", help="Also write every figure (PNG) into this existing folder."),
    ] = None,
    top: Annotated[int, typer.Option(help="--keys/--all: show the N strongest pairs.", min=1)] = 50,
    across_metrics: Annotated[
        bool,
        typer.Option("--across-metrics", help="--keys/--all: only pairs of keys from different metrics."),
    ] = False,
    among: Annotated[
        str | None,
        typer.Option(
            "--among", help="bias or generalization: every pair of that role's keys (the bias × bias matrix)."
        ),
    ] = None,
    mask_p: Annotated[
        float | None,
        typer.Option(
            "--mask-p",
            help="The study's display: show a coefficient whose uncorrected p is ≥ this as 0 (e.g. 0.05).",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    size_by: Annotated[
        str | None,
        typer.Option(
            "--size-by", help="A numeric tag that sizes the study-style scatter markers (e.g. eps)."
        ),
    ] = None,
    figure_formats: Annotated[
        str,
        typer.Option(
            "--figure-formats", help="--figures: the file formats, comma-separated (png, svg, pdf)."
        ),
    ] = "png",
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="Also every table per group: TAG (one group per value) or TAG=V1,V2 (those vs the rest), "
            "e.g. category=adversarial.",
        ),
    ] = None,
    predict: Annotated[
        bool,
        typer.Option(
            "--predict/--no-predict",
            help="All biases together: cross-validated R² of each generalization axis (ridge, nested CV).",
        ),
    ] = True,
    permutations: Annotated[
        int, typer.Option(help="Permutations of the R² test (its p floor is 1/(N+1)).", min=100)
    ] = 1000,
    family: Annotated[
        str,
        typer.Option(
            "--family",
            help="The Holm/BH correction family: table (every cell), column (one per generalization "
            "axis), row (one per bias), or KEY1,KEY2,… fixed in advance (the cells among them; the rest "
            "a second family).",
        ),
    ] = "table",
) -> None:
    """Do biases explain generalization? Bias × generalization correlations across checkpoints, with
    bootstrap intervals, corrected p-values, partial correlations and leave-one-category-out ranges."""
    import biasbench
    from biasbench.reports.statistics import check_choice

    formats = ("terminal", "md", "html", "csv", "json", "latex")
    if fmt not in formats:
        _fail(f"unknown format {fmt!r} ({', '.join(formats)})")
    check_choice(method, correction)
    _check_out_path(out_file, "--out")
    _check_out_path(figure, "--figure")
    _check_out_path(figures, "--figures", folder=True)
    rep = biasbench.report(
        db,
        keys=_csv_list(keys),
        all_keys=all_keys,
        bias=_csv_list(bias),
        generalization=_csv_list(generalization),
        method=method,
        correction=correction,
        control=control,
        category=category,
        resamples=resamples,
        seed=seed,
        top=top,
        across_metrics=across_metrics,
        sis_sizes=fmt == "html" or figures is not None,
        among=among,
        mask_p=mask_p,
        by=by,
        predict=predict,
        permutations=permutations,
        family=family if "," not in family and "." not in family else (_csv_list(family) or []),
    )
    colour = colour_by or rep.category
    covariates = rep.scores.covariates.columns
    if colour and colour not in covariates:
        _fail(
            f"--colour-by: no checkpoint carries the tag {colour!r}; tags: {', '.join(covariates) or 'none'}"
        )
    if fmt == "terminal":
        text = None
        console = Console(file=open(out_file, "w", encoding="utf-8"), width=160) if out_file else out  # noqa: SIM115
        for part in rep.terminal_parts():
            console.print(part)
        if out_file:
            console.file.close()
    elif fmt == "html":
        text = rep.to_html(colour_by=colour, size_by=size_by)
    else:
        text = {"md": rep.to_markdown, "csv": rep.to_csv, "json": rep.to_json, "latex": rep.to_latex}[fmt]()
    if text is not None:
        if out_file:
            out_file.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    if out_file:
        err.print(f"report written to {out_file}", markup=False)
    if figure or figures:
        from biasbench.reports import figures as figs

        written = []
        if figure:
            written.append(figs.save(figs.heatmap(rep), figure))
        if figures:
            written += figs.write_all(
                rep,
                figures,
                colour_by=colour,
                size_by=size_by,
                formats=tuple(_csv_list(figure_formats) or ["png"]),
            )
        for p in written:
            err.print(f"figure written to {p}", markup=False)


@app.command("import")
def import_table(
    file: Annotated[
        Path, typer.Argument(help="A wide CSV table: one row per checkpoint.", show_default=False)
    ],
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            help="The mapping (TOML): checkpoint column, tags, metric.key targets. Or --preset.",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="A shipped mapping for a published table instead of --mapping (gavrikov2024: "
            "raw-data/benchmark.csv of Gavrikov & Keuper, CVPR 2024).",
            show_default=False,
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source", help="A short name for where the table comes from (default: the preset's name)."
        ),
    ] = None,
    db: DbOpt = Path(DEFAULT_DB),
) -> None:
    """Import published per-checkpoint results (a wide CSV) so reports use them beside measured ones."""
    import biasbench

    def _few(names: list[str], limit: int = 20) -> str:  # the first `limit` names and how many more
        return ", ".join(names[:limit]) + (f", … ({len(names) - limit} more)" if len(names) > limit else "")

    table = biasbench.import_table(file, mapping, source, db=db, preset=preset)
    prov = table.provenance
    n_ckpt = table.results["checkpoint"].nunique()
    out.print(
        f"imported {len(table.results)} values of {n_ckpt} checkpoints from {file.name} "
        f"(sha256 {prov['sha256'][:12]}…) as source {prov['source']!r}"
        + (f" (preset {preset})" if preset else "")
        + f" into {db}",
        markup=False,
    )
    if table.skipped:
        err.print(f"{table.skipped} mapped cells were empty and left out", markup=False)
    if table.left_out:
        err.print(
            f"{len(table.left_out)} rows the mapping does not list were left out: {_few(table.left_out)}",
            markup=False,
        )
    if table.absent:
        err.print(
            f"{len(table.absent)} checkpoints the mapping lists are not in the table: {_few(table.absent)}",
            markup=False,
        )
    if table.unused:
        err.print(f"columns not in the mapping (not imported): {_few(table.unused)}", markup=False)
    for note in prov.get("notes", []):
        err.print(f"note: {note}", markup=False)


@app.command()
def status(
    db: DbOpt = Path(DEFAULT_DB),
    failures: Annotated[int, typer.Option(help="Show the last N failures.")] = 10,
) -> None:
    """What the database holds: runs, jobs, results, and the latest failures with their errors. A
    `running` run on this host whose process is gone is marked `interrupted` (when the file is writable)."""
    from biasbench.harness import session

    st = session.status(db, failures=failures)
    out.print(f"{st.path.resolve()}: " + ", ".join(f"{k} {v}" for k, v in st.counts.items()), markup=False)
    t = Table(title="recent runs")
    for c in ("run_id", "status", "started_at", "device"):
        t.add_column(c)
    for r in st.runs.itertuples():
        _row(t, r.run_id, str(r.status), str(r.started_at)[:19], str(r.device))
    out.print(t)
    if len(st.failures):
        t = Table(title="latest failures")
        for c in ("checkpoint", "metric", "error"):
            t.add_column(c)
        for r in st.failures.itertuples():
            _row(t, r.checkpoint_id, r.metric, r.error)
        out.print(t)


@app.command()
def merge(
    shards: Annotated[
        list[Path], typer.Argument(help="Databases to merge in (their .items folders beside them).")
    ],
    db: DbOpt = Path(DEFAULT_DB),
) -> None:
    """Merge shard databases into --db: jobs not stored there yet (with results and per-item files),
    checkpoints, runs and failures. Merging the same shard twice adds nothing."""
    from biasbench.harness import session

    session.merge(
        shards,
        db,
        lambda shard, counts: out.print(
            f"merged {shard} into {db}: added {', '.join(f'{k} {v}' for k, v in counts.items())}",
            markup=False,
        ),
    )


@app.command("lock")
def lock_cmd(
    targets: Annotated[list[str], typer.Argument(help="Registry names or registry .toml files.")],
    where: Annotated[
        list[str] | None, typer.Option("--where", help="Only checkpoints whose tag KEY equals VALUE.")
    ] = None,
    lock_file: LockOpt = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Download cache (default: $BIASBENCH_CACHE or ~/.cache/biasbench)."),
    ] = None,
) -> None:
    """Download each weight file that its registry does not pin, once, and record its sha256 and size in
    the registry's lock file (<registry>.lock; ./<name>.lock for a shipped registry). `bench run` then
    verifies every download against it."""
    from biasbench.core.errors import WorkFailed
    from biasbench.core.paths import default_cache_dir
    from biasbench.harness import session
    from biasbench.registry import lock

    cache = cache_dir or default_cache_dir()
    specs = session.resolve(targets, where or ())
    _, missing = lock.apply_locks(specs, lock_file)
    n_pinned = sum(len(lock.spec_parts(sp)) for sp in specs) - len(missing)
    err.print(
        f"{len(specs)} checkpoints: {len(missing)} files to lock, {n_pinned} pinned, locked or checked "
        "by their source",
        markup=False,
    )
    _, failed = lock.lock_each(
        missing,
        cache,
        lambda e, f: out.print(
            f"{e.id} part {e.part}: sha256 {e.sha256} ({e.size} bytes) -> {f}", markup=False
        ),
        lambda u, e: err.print(f"failed: {u.spec.id} part {u.part}: {_plain(e)}", markup=False),
    )
    if failed:
        raise WorkFailed(
            f"{len(failed)} of {len(missing)} files could not be locked (each is named above); "
            "the others are recorded in their lock files"
        )


def _print_block(block: Any) -> None:
    """One listing block in any terminal width: head lines of fields padded to the widest of the block
    (never truncated; the last field unpadded) and indented, dim detail lines that wrap."""
    from rich.padding import Padding
    from rich.text import Text

    entries = block.entries
    n_fields = max((len(e.head) for e in entries), default=0)
    widths = [max(len(_plain(e.head[i])) for e in entries if len(e.head) > i) for i in range(n_fields)]
    if block.title:
        out.print(Text(_plain(block.title), style="bold underline"))
    for title, members in block.groups:
        if title:
            out.print(Text(_plain(title), style="bold"))
        for e in members:
            line = Text()
            for i, value in enumerate(e.head):
                pad = widths[i] if i < len(e.head) - 1 else 0
                line.append(_plain(value).ljust(pad), style="bold" if i == 0 else "")
                line.append("  ")
            out.print(line.rstrip() or line)
            for d in e.details:
                out.print(Padding(Text(_plain(d), style="dim", overflow="fold"), (0, 0, 0, 4)))
    if block.footer:
        out.print(Text(_plain(block.footer), style="dim"))


@ls_app.command("checkpoints")
def ls_checkpoints(
    registry: Annotated[
        list[str] | None, typer.Argument(help="Registry names or files (default: all shipped).")
    ] = None,
    lock_file: LockOpt = None,
) -> None:
    """Checkpoints of the shipped registries (or of the given ones), grouped by their category tag, with
    each one's weight source and how its bytes are pinned (sha256, locked, UNPINNED, hash prefix, hub)."""
    from biasbench.harness import listing

    for block in listing.checkpoints(registry, lock_file):
        _print_block(block)
        out.print()


@ls_app.command("metrics")
def ls_metrics(
    full: Annotated[bool, typer.Option("--full", help="Print each metric's whole definition.")] = False,
) -> None:
    """Installed metric plugins, their providers and definitions."""
    import dataclasses
    import inspect

    from rich.padding import Padding
    from rich.text import Text

    from biasbench.core.plugins import PluginError
    from biasbench.metrics.discovery import METRICS

    for name, prov in sorted(METRICS.providers().items()):
        try:
            cls = METRICS.load(prov)
        except PluginError as e:
            out.print(Text(f"{name} ({prov.provider}): {e}", style="red"))
            continue
        head = Text(name, style="bold")
        head.append(f" v{cls.version} ({prov.provider})", style="dim")
        out.print(head)
        params = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Params))
        out.print(Padding(Text(cls.summary()), (0, 0, 0, 4)))
        out.print(Padding(Text(f"params: {params or '-'}", style="dim"), (0, 0, 0, 4)))
        if full:
            mod = inspect.getmodule(cls)
            out.print(inspect.cleandoc(mod.__doc__ or cls.__doc__ or ""), markup=False)
        out.print()


@ls_app.command("datasets")
def ls_datasets(data_root: DataRootOpt = None) -> None:
    """Registered datasets (a family of splits is one entry), where each is looked for, and whether it is there."""
    from biasbench.harness import listing
    from biasbench.harness.datasets.catalog import folder_hint

    _print_block(listing.datasets(_data_root(data_root)))
    out.print(_plain(folder_hint()), style="dim", markup=False, highlight=False)


@ls_app.command("sources")
def ls_sources() -> None:
    """Installed weight sources (the `weights = "<scheme>:…"` prefixes) and their providers."""
    from biasbench.harness import listing

    _print_block(listing.sources())


@ls_app.command("architectures")
def ls_architectures() -> None:
    """Installed architecture families (the `arch = "<family>:<name>"` prefixes) and their providers."""
    from biasbench.harness import listing

    _print_block(listing.architectures())


@ls_app.command("labels")
def ls_labels() -> None:
    """Installed label spaces: class count, default dataset per purpose, subsets, providers."""
    from biasbench.harness import listing

    _print_block(listing.label_spaces())


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name (see `bench ls datasets`).")],
    data_root: DataRootOpt = None,
    mirror: Annotated[
        str | None,
        typer.Option(help="Base URL of a mirror laid out like a data root (or $BIASBENCH_MIRROR)."),
    ] = None,
    sha256: Annotated[
        str | None, typer.Option(help="Expected sha256 of a release archive whose download spec pins none.")
    ] = None,
) -> None:
    """Download a dataset, verify every file's sha256, and put it under the data root."""
    from biasbench.harness.datasets.fetch import fetch_dataset

    with _os_errors():
        path = fetch_dataset(
            name,
            _data_root(data_root),
            mirror=mirror,
            log=err.print,
            sha256=sha256,
        )
    out.print(f"[green]ok[/green]: {_esc(name)} at {_esc(path)}")


@data_app.command("verify")
def data_verify(
    name: Annotated[str, typer.Argument(help="Dataset name.")], data_root: DataRootOpt = None
) -> None:
    """Check a dataset's files against its download spec (sha256 of every file)."""
    from biasbench.core.errors import WorkFailed
    from biasbench.harness.datasets.verify import verify_dataset

    with _os_errors():
        problems = verify_dataset(name, _data_root(data_root))
    if problems:
        for p in problems[:50]:
            err.print(f"[red]✗[/red] {_esc(p)}")
        raise WorkFailed(f"{name}: {len(problems)} problem(s)")
    out.print(f"[green]ok[/green]: every file of {_esc(name)} matches its download spec")


@data_app.command("make")
def data_make(
    name: Annotated[str, typer.Argument(help="The dataset to make: imagenet-c.")],
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="A folder of ImageNet images (<wnid>/<file> or flat <wnid>_<name>.JPEG), or a dataset "
            "name whose folder to use (imagenet-val, imagenet-sample).",
        ),
    ],
    to: Annotated[
        Path | None, typer.Option("--to", help="The data root to write into (default: --data-root).")
    ] = None,
    data_root: DataRootOpt = None,
    per_class: Annotated[int | None, typer.Option(help="At most K source images per class.", min=1)] = None,
    corruptions: Annotated[
        str | None, typer.Option(help="Comma-separated corruptions (default: all 19).")
    ] = None,
    severities: Annotated[str, typer.Option(help="Comma-separated severities.")] = "1,2,3,4,5",
) -> None:
    """Make a dataset locally from ImageNet images: `imagenet-c` writes <root>/imagenet-c/<corruption>/
    <severity>/<wnid>/*.JPEG (Hendrycks' recipe; needs the [imagenet-c] extra)."""
    if name != "imagenet-c":
        _fail(f"bench data make knows imagenet-c only, not {name!r} (no maintained ImageNet-C-bar generator)")
    from biasbench.harness.datasets.make_imagenet_c import make_imagenet_c

    root = _data_root(data_root)
    src = Path(source)
    if not src.is_dir():
        from biasbench.harness.datasets.catalog import catalog

        entry = catalog().get(source)
        if entry is None or entry.location is None:
            _fail(f"--from {source!r}: no such folder, nor a dataset name with a folder")
        src = entry.location(root)
    sev = [s.strip() for s in severities.split(",") if s.strip()]
    if not all(s.isdigit() for s in sev):
        _fail(f"--severities {severities!r}: comma-separated whole numbers, e.g. 1,3,5")
    with _os_errors():
        report = make_imagenet_c(
            src,
            to if to is not None else root,
            corruptions=[c.strip() for c in corruptions.split(",") if c.strip()] if corruptions else None,
            severities=[int(s) for s in sev],
            per_class=per_class,
            log=err.print,
        )
    out.print(f"[green]ok[/green]: {report.written} images written into {_esc(report.target)}")


@zoo_app.command("train")
def zoo_train(
    recipe: Annotated[str | None, typer.Option(help="One recipe (see `bench ls checkpoints demo`).")] = None,
    all_recipes: Annotated[bool, typer.Option("--all", help="Every recipe.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where to write weights (default: the package's).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Override the number of training steps (for a quick try).")
    ] = None,
    subsets: Annotated[
        str | None,
        typer.Option(
            help="Train on pixel subsets of the training images only: backselect (the --source "
            "checkpoint's top-q BackSelect pixels) or random (q random pixels); needs --recipe and --out."
        ),
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="The checkpoint whose BackSelect subsets to train on (--subsets).")
    ] = None,
    q: Annotated[float, typer.Option(min=1e-6, max=1.0, help="Share of pixels kept (--subsets).")] = 0.05,
    subset_images: Annotated[
        int, typer.Option(min=1, help="Training images to take subsets of (--subsets).")
    ] = 2000,
    trust_checkpoints: Annotated[
        bool, typer.Option("--trust-checkpoints", help="Allow code-running checkpoint files (--source).")
    ] = False,
) -> None:
    """Train the demo zoo's checkpoints deterministically from scratch (or one recipe on pixel subsets)."""
    from biasbench.registry import zoo
    from biasbench.registry.zoo import training

    if bool(recipe) == all_recipes:
        _fail("give exactly one of --recipe R or --all")
    if subsets is not None:
        from biasbench.harness import subset_training

        if not recipe or out_dir is None:
            _fail("--subsets trains one recipe into a folder of yours: give --recipe R and --out DIR")
        if subsets not in subset_training.KINDS:
            _fail(f"unknown --subsets {subsets!r}; choose one of {', '.join(subset_training.KINDS)}")
        path = subset_training.train_on_subsets(
            recipe,
            subsets,  # type: ignore[arg-type]
            out_dir,
            source=source,
            q=q,
            n_train=subset_images,
            steps=steps,
            trust=trust_checkpoints,
            log=err.print,
        )
        err.print(f"[green]ok[/green]: {_esc(path)}")
        return
    dest = out_dir or zoo.weights_dir()
    if recipe:
        if recipe not in training.RECIPES:
            _fail(f"unknown recipe {recipe!r}; recipes: {', '.join(training.RECIPES)}")
        path = training.train(recipe, dest, steps=steps, log=err.print)
        err.print(f"[green]ok[/green]: {_esc(path)}")
    else:
        training.train_all(dest, log=err.print, steps=steps)


@zoo_app.command("subsets")
def zoo_subsets(
    targets: Annotated[list[str], typer.Argument(help="Checkpoints to evaluate (ids, ARCH@WEIGHTS, …).")],
    source: Annotated[str, typer.Option(help="The checkpoint whose BackSelect subsets are shown.")],
    q: Annotated[float, typer.Option(min=1e-6, max=1.0, help="Share of pixels kept.")] = 0.05,
    n_test: Annotated[int, typer.Option(min=1, help="Test images (demo-world/test, first n).")] = 1000,
    trust_checkpoints: Annotated[
        bool, typer.Option("--trust-checkpoints", help="Allow code-running checkpoint files.")
    ] = False,
) -> None:
    """Accuracy on full test images vs the source's top-q BackSelect subsets vs random q subsets."""
    from biasbench.harness import subset_training

    rows = subset_training.subset_accuracy(targets, source, q=q, n_test=n_test, trust=trust_checkpoints)
    t = Table(
        title=f"top-1 on {n_test} demo-world/test images: full, {q:.0%} BackSelect subsets of {source}, {q:.0%} random"
    )
    for col in ("checkpoint", "full", "backselect subset", "random subset"):
        t.add_column(col, justify="left" if col == "checkpoint" else "right")
    for r in rows:
        t.add_row(_esc(r.checkpoint), f"{r.full:.3f}", f"{r.backselect:.3f}", f"{r.random:.3f}")
    out.print(t)


def main() -> None:
    """The `bench` entry point: every error of ours ends in one ``error:`` line and its exit code
    (:class:`biasbench.core.errors.BiasbenchError`; the command group catches it once). As the command
    returns, the interpreter's last garbage collection is skipped (:mod:`biasbench.harness.heap`)."""
    from biasbench.harness.heap import skip_final_collection

    try:
        app()
    finally:
        skip_final_collection()


if __name__ == "__main__":
    main()

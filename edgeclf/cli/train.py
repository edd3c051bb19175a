"""``edgeclf train``, ``evaluate``, ``recipes`` and ``backbones``."""

from __future__ import annotations


import click

from edgeclf.edge_runtime.paths import display_width, pad as pad_text

from .core import (ClickReporter, _CROP_HELP, _PAD_HELP, _crop, _csv_ints, _foreign_model_options, _foreign_spec,
                   _img_size, _pad, _run, _split, main)


# Options default to None so that only what the user typed overrides a recipe (or the built-in defaults, shown in
# brackets). A None never clobbers a recipe's setting.
@main.command()
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Run directory to write (resumed if unfinished).")
@click.option("--recipe", help="A named recipe (see `edgeclf recipes`); the options below override its settings.")
@click.option("--backbone", help="Backbone name (see `edgeclf backbones`) [default: mobilenet_v2].")
@click.option("--img-size", callback=_img_size, metavar="N|HxW",
              help="Input size in pixels: N for N x N, or HxW (height first), e.g. 160x288 for 16:9 camera frames "
                   "[default: the recipe's or backbone's].")
@click.option("--crop", callback=_crop, metavar="F|none",
              help="Centre crop before resizing, " + _CROP_HELP + " [default: none: the whole image, stretched to the "
                   "input].")
@click.option("--pad", callback=_pad, metavar="COLOUR|none",
              help="Letterbox instead of --crop: " + _PAD_HELP + ", e.g. 114 [default: none].")
@click.option("--weights", help="imagenet, none, or a backbone .weights.h5 path [default: imagenet; none for "
                   "backbones without pretrained weights, e.g. simple_cnn].")
@click.option("--epochs", type=int, help="Epochs (first phase) [default: 10].")
@click.option("--batch-size", type=int,
              help="[default: from the training images: 32 below 2,000, 64 below 8,000, else 128]")
@click.option("--lr", "learning_rate", type=float,
              help="Adam learning rate [default: 0.001 at batch 32, scaled with the square root of the batch size].")
@click.option("--fine-tune-layers", type=int,
              help="Top backbone layers unfrozen in phase 2 (pretrained only; 0 skips phase 2) [default: 20].")
@click.option("--fine-tune-epochs", type=int, help="Epochs of phase 2 [default: 5].")
@click.option("--fine-tune-lr", "fine_tune_learning_rate", type=float, help="Phase 2 learning rate [default: lr/10].")
@click.option("--patience", type=int, help="Early-stopping patience in epochs [default: 5].")
@click.option("--early-stopping/--no-early-stopping", default=None, help="[default: on]")
@click.option("--reduce-lr/--no-reduce-lr", default=None,
              help="Reduce the learning rate during training, as --lr-schedule says [default: on].")
@click.option("--lr-schedule", type=click.Choice(["plateau", "cosine"]),
              help="plateau: x0.3 after patience/2 epochs without improvement; cosine: one warm-up epoch, then "
                   "cosine decay to 0 over the phase [default: cosine].")
@click.option("--distribute", type=click.Choice(["none", "data-parallel"]),
              help="data-parallel: one model on every local device (GPUs, or the host devices XLA_FLAGS forces), "
                   "each batch split among them; several hosts on JAX through Keras' KERAS_DISTRIBUTION_* "
                   "variables (docs/scaling.md) [default: none].")
@click.option("--monitor", type=click.Choice(["val_loss", "val_accuracy"]), help="[default: val_loss]")
@click.option("--folds", type=int, help="K for stratified K-fold cross-validation [default: 1].")
@click.option("--seed", type=int, help="[default: 42]")
@click.option("--split", "split", callback=_split,
              help="train,val,test fractions [default: from the data: 0.7,0.15,0.15 for data that is not "
                   "split; a tenth of train for val when the data has its own test split].")
@click.option("--pooling", type=click.Choice(["gap", "flatten"]), help="[default: gap]")
@click.option("--dense", callback=_csv_ints, help="Hidden Dense widths of the head, e.g. 256,128 [default: none].")
@click.option("--dropout", type=float, help="Dropout before each head Dense layer [default: 0.2].")
@click.option("--augment/--no-augment", default=None,
              help="Augmentation chosen from the input size: flip and shift up to 64 px a side, also rotation, zoom "
                   "and contrast above [default: on].")
@click.option("--randaugment", is_flag=True, default=None, help="Use RandAugment instead of the default augmentation.")
@click.option("--class-weights", type=click.Choice(["auto", "on", "off"]),
              help="auto: on when the largest class is >1.5x the smallest [default: auto].")
@click.option("--mixed-precision", type=click.Choice(["auto", "on", "off"]), help="auto: on when a GPU is present.")
@click.option("--deterministic/--no-deterministic", default=None,
              help="TensorFlow op determinism, or XLA's deterministic GPU ops under JAX (reproducible with --seed; "
                   "slower on GPU) [default: on].")
@click.option("--dedup", is_flag=True, default=None, help="Remove val/test images that duplicate an earlier split's image.")
@click.option("--leakage-threshold", type=int, help="pHash distance (of 256 bits) counted as a near-duplicate [default: 16].")
@click.option("--keep-cache", is_flag=True, default=None, help="Keep the decoded-image cache in the run directory.")
@click.option("--confine", is_flag=True,
              help="Refuse CSV manifest rows that name images outside the manifest's folder (for a manifest from a "
                   "source you do not trust); without it they are used and counted in the report.")
@click.option("--force", is_flag=True, help="Replace an existing run in --out.")
@click.pass_context
def train(ctx, data, out_dir, recipe, backbone, img_size, crop, pad, weights, pooling, dense, dropout, augment,
          randaugment, split, confine, force, **options):
    """Train a classifier on DATA and write a run directory.

    DATA is a folder of class folders (root/<class>/*.jpg), pre-split folders (root/{train,val,test}/<class>/),
    a CSV manifest (path,label[,split]) or images.npy with labels.csv. With a per-category recipe
    (content-resnet50), DATA holds one such dataset per category and each trains into OUT/<category>.

    Keras trains on TensorFlow; with KERAS_BACKEND=jax it trains on JAX (experimental; TensorFlow need not be
    installed, e.g. on a GPU box with JAX's CUDA wheels). The model.keras is the same either way, and
    `edgeclf export` (which needs TensorFlow) takes it from either.

    \b
    Example:
      edgeclf train data/helmets --backbone mobilenet_v2 --epochs 10 --out runs/helmet
      edgeclf train data/fmnist --backbone simple_cnn --weights none --img-size 28 --out runs/fm
      edgeclf train data/helmets --recipe helmet-vgg16-fixed --epochs 5 --out runs/helmet-vgg
      edgeclf train data/site-cam --backbone mobilenet_v3_small --img-size 160x288 --crop 1 --out runs/cam
      KERAS_BACKEND=jax edgeclf train data/helmets --backbone mobilenet_v2 --out runs/helmet-jax
      KERAS_BACKEND=jax edgeclf train data/helmets --distribute data-parallel --out runs/helmet-4gpu
    """

    def go():
        from dataclasses import replace

        from edgeclf.models import HeadSpec, get_backbone, get_recipe
        from edgeclf.toolkit.augment import AugmentSpec
        from edgeclf.toolkit.splits import SplitSpec
        from edgeclf.toolkit.train import TrainSpec, train as run_train, train_per_category

        r = get_recipe(recipe) if recipe else None
        spec = r.train if r else TrainSpec()
        given = {k: v for k, v in options.items() if v is not None}
        if randaugment:
            given["augment"] = AugmentSpec(randaugment=True)
        elif augment is not None:  # --augment: the default for the input size (toolkit.augment.augment_for)
            spec = replace(spec, augment=None if augment else AugmentSpec.none())
        if split is not None:
            given["split"] = SplitSpec(*split)
        spec = replace(spec, **given)
        head = r.head if r else HeadSpec()
        head_given = {k: v for k, v in (("pooling", pooling), ("dense", dense), ("dropout", dropout)) if v is not None}
        if head_given:
            # A uniform --dropout (or new --dense widths) replaces the recipe's per-layer rates.
            head = replace(head, **head_given, dropouts=None if "dropout" in head_given or "dense" in head_given
                           else head.dropouts)
        name = backbone or (r.backbone if r else "mobilenet_v2")
        size = r.img_size if img_size is None and r and not backbone else img_size
        kwargs = dict(backbone=name, img_size=size, crop=crop, pad=pad, head=head,
                      weights=weights or (r.weights if r else "imagenet" if get_backbone(name).pretrained else "none"),
                      normalisation=r.normalisation if r and not backbone else None, spec=spec, force=force,
                      confine=confine, reporter=ClickReporter(ctx.obj["verbose"]))
        if r is not None and r.per_category:
            for result in train_per_category(data, out_dir, **kwargs):
                _print_train_summary(result)
        else:
            _print_train_summary(run_train(data, out_dir, **kwargs))

    _run(ctx, go, interrupted="Interrupted. Run the same command again to resume from the last finished epoch.")


def _print_train_summary(result) -> None:
    click.echo()
    click.secho(f"Trained {result.model_path}", bold=True)
    header = f"{'split':<6} {'n':>6} {'accuracy':>9} {'F1 macro':>9} {'ROC-AUC':>8}"
    click.echo(header)
    for name, m in result.metrics.items():
        auc = f"{m['roc_auc']:.4f}" if m["roc_auc"] is not None else "n/a"
        colour = "green" if m["accuracy"] >= 0.9 else ("yellow" if m["accuracy"] >= 0.7 else "red")
        click.echo(f"{name:<6} {m['n']:>6} " + click.style(f"{m['accuracy']:>9.4f}", fg=colour)
                   + f" {m['f1_macro']:>9.4f} {auc:>8}")
    if len(result.folds) > 1:
        accs = [f["val_accuracy"] for f in result.folds]
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
        click.echo(f"{len(accs)}-fold val accuracy {mean:.4f} ± {std:.4f}")
    if result.skipped:
        click.secho(f"{len(result.skipped)} file(s) skipped (see report.md)", fg="yellow")
    leaked = result.leakage["leaked_images"]
    if leaked["val"] or leaked["test"]:
        click.secho(f"Leakage: {leaked['val']} val and {leaked['test']} test images duplicate an earlier split"
                    + (" (removed)" if result.leakage.get("removed") else " (see report.md; --dedup removes them)"),
                    fg="yellow")
    fold_leaks = sum(f["leaked_val_images"] for f in result.leakage.get("folds", []))
    if fold_leaks:
        click.secho(f"K-fold leakage: {fold_leaks} val image(s) across the folds duplicate their fold's train"
                    + (" (removed)" if any(f["removed"] for f in result.leakage["folds"]) else
                       " (see report.md; --dedup removes them)"), fg="yellow")
    click.echo(f"Wall time {result.wall_time_s:.0f} s{' (resumed)' if result.resumed else ''}. "
               f"Report: {result.run_dir / 'report.md'}")


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", type=click.Path(exists=True))
@click.option("--split", default="all", show_default=True, help="all, or train/val/test of a pre-split dataset.")
@click.option("--out", "out_dir", type=click.Path(), help="Write metrics.json and plots here.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="Two-class models: the second class wins when its probability reaches this, as in "
                   "predict --threshold (the run's report.md suggests one chosen on val) [default: most probable].")
@click.option("--force", is_flag=True, help="Overwrite an earlier evaluation in --out.")
@_foreign_model_options
@click.pass_context
def evaluate(ctx, model, data, split, out_dir, batch_size, threshold, force, labels, input_norm, mean, std, output_kind,
             img_size, resize, crop, pad):
    """Evaluate a trained model.keras on DATA (any form `train` accepts).

    A .keras classifier trained elsewhere (no metadata.json beside it) needs --labels and --input-norm, as for
    `export`, and is evaluated wrapped as `export` wraps it.

    \b
    Example:
      edgeclf evaluate runs/helmet/model.keras data/helmets_holdout --out runs/helmet/holdout
      edgeclf evaluate runs/helmet/model.keras data/helmets_holdout --threshold 0.7
      edgeclf evaluate notebook.keras data/pets/test --labels cat,dog --input-norm unit
    """

    def go():
        from edgeclf.toolkit.evaluate import evaluate as run_eval

        foreign = _foreign_spec(labels, input_norm, output_kind, img_size, resize, mean, std, crop, pad)
        result = run_eval(model, data, split=split, out_dir=out_dir, batch_size=batch_size, force=force,
                          threshold=threshold, foreign=foreign, reporter=ClickReporter(ctx.obj["verbose"]))
        m = result.metrics
        auc = f"{m['roc_auc']:.4f}" if m["roc_auc"] is not None else "n/a"
        second = list(m["per_class"])[1]
        decided = f" ({second} where P({second}) >= {threshold:g})" if threshold is not None else ""
        click.echo(f"n={m['n']} accuracy={m['accuracy']:.4f} f1_macro={m['f1_macro']:.4f} roc_auc={auc}{decided}")
        predicted = [sum(col) for col in zip(*m["confusion_matrix"])]
        absent = []
        width = max([20, *(display_width(name) for name in m["per_class"])])
        for (name, v), n_pred in zip(m["per_class"].items(), predicted):
            if v["support"]:
                click.echo(f"  {pad_text(name, width)} precision={v['precision']:.4f} recall={v['recall']:.4f} "
                           f"f1={v['f1']:.4f} support={v['support']}")
            elif n_pred:
                click.echo(f"  {pad_text(name, width)} not in these images, yet predicted for {n_pred}")
            else:
                absent.append(name)
        if any(not v["support"] for v in m["per_class"].values()):
            # As classification_metrics averages: over the classes that are true or predicted labels here.
            counted = sum(1 for v, n_pred in zip(m["per_class"].values(), predicted) if v["support"] or n_pred)
            click.echo(f"  (macro averages over the {counted} class(es) in these images or predicted for them)")
        if absent:
            click.echo(f"  ({len(absent)} other class(es) neither in these images nor predicted: {', '.join(absent)})")
        if result.skipped:
            click.secho(f"{len(result.skipped)} file(s) skipped", fg="yellow")
        if result.out_dir:
            click.echo(f"Wrote {result.out_dir / 'metrics.json'}")

    _run(ctx, go)


@main.command()
@click.argument("pattern", default="*")
@click.option("--details", is_flag=True, help="Also show what the original did, its reported figure and the fixes.")
def recipes(pattern, details):
    """List the training recipes (optionally matching PATTERN, e.g. 'helmet*').

    \b
    Example:
      edgeclf recipes --details
      edgeclf train data/helmets --recipe helmet-vgg16-fixed --out runs/helmet
    """
    from edgeclf.models import get_recipe, list_recipes

    for name in list_recipes(pattern):
        r = get_recipe(name)
        click.echo(f"{name:<20} {r.backbone:<13} {r.img_size:>4}px  {r.description}")
        if details:
            click.echo(f"    original: {r.original}; reported {r.reported}")
            if r.fix:
                click.echo(f"    fix: {r.fix}")
            for a in r.assumptions:
                click.echo(f"    assumed: {a}")


@main.command()
@click.argument("pattern", default="*")
def backbones(pattern):
    """List the registered backbones (optionally matching PATTERN, e.g. 'mobilenet*'): the default input size,
    the smallest side --img-size may give, and what it is."""
    from edgeclf.models import get_backbone, list_backbones

    for name in list_backbones(pattern):
        bb = get_backbone(name)
        click.echo(f"{name:<20} {bb.default_size:>4}px (min {bb.min_size:>2})  {bb.description}")

def add_parser(sub):
    from ..threads import add_argument as add_threads

    p = sub.add_parser("edit", help="edit facts (ROME, MEMIT, AlphaEdit, LoRA) or negate a task vector",
                       description="Run an editing recipe (YAML path or a shipped name: rome, memit, alphaedit, "
                                   "lora_edit, task_vector). Options follow as --key value and override the recipe; "
                                   "`llm-forget edit --options` lists them.")
    p.add_argument("recipe", nargs="?", help="recipe YAML or shipped recipe name")
    p.add_argument("--options", action="store_true", help="list every option with its help and default")
    add_threads(p)
    p.set_defaults(run=run, accepts_overrides=True)


def run(args):
    from ..editing.config import EditConfig
    from ..errors import UserError
    from ._options import recipe_options

    if args.options:
        print(recipe_options(EditConfig))
        return 0
    if not args.recipe:
        raise UserError("give a recipe: a YAML path or a shipped recipe name (rome, memit, alphaedit, ...)")
    from ..config import parse_overrides
    from ..editing.run import edit

    res = edit(args.recipe, **parse_overrides(args.overrides))
    post = res.metrics.get("post", {})
    if "counterfact" in post:
        c, p = post["counterfact"], res.metrics["pre"].get("counterfact", {})
        print(f"efficacy {c['efficacy_score']:.3f}, paraphrase {c['paraphrase_score']:.3f}, "
              f"neighbourhood {c['neighbourhood_score']:.3f} (before: {p.get('neighbourhood_score', float('nan')):.3f})")
    if "zsre" in post:
        z = post["zsre"]
        print(f"reliability {z['reliability']:.3f}, generalization {z['generalization']:.3f}, "
              f"locality {z.get('locality', float('nan')):.3f}")
    if "sweep" in res.metrics:
        ch = res.metrics["sweep"]["chosen"]
        print(f"chosen λ = {ch['lambda']:g}: forget perplexity {ch['forget_perplexity']:.3g}, retain perplexity "
              f"{ch['retain_perplexity']:.3g} (calibration rows)" if ch else "no λ keeps enough retain utility")
        ev = res.metrics.get("evaluation")
        if ev:
            print(f"on the {ev['retain_rows']} retain rows that did not choose λ: retain perplexity "
                  f"{ev['chosen']['retain_perplexity']:.3g} ({ev['ratio_to_target']['retain_perplexity']:.3f}x the "
                  f"target's), forget perplexity {ev['ratio_to_target']['forget_perplexity']:.3f}x the target's")
    print(f"outputs: {res.output_dir}")
    return 0

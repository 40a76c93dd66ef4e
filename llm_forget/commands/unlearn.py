def add_parser(sub):
    p = sub.add_parser("unlearn", help="run one unlearning recipe",
                       description="Run a recipe (YAML path or the name of a shipped recipe, e.g. npo). "
                                   "Any option (see `llm-forget unlearn --options`) can follow as --key value "
                                   "and overrides the recipe.")
    p.add_argument("recipe", nargs="?", help="recipe YAML, or a shipped recipe name (npo, grad_diff, ...)")
    p.add_argument("--options", action="store_true", help="list every option with its help and default")
    p.set_defaults(run=run, accepts_overrides=True)


def run(args):
    import dataclasses

    from ..config import UnlearnConfig
    from ..recipes_index import resolve_recipe

    if args.options:
        for f in dataclasses.fields(UnlearnConfig):
            if f.init and f.metadata.get("help"):
                print(f"--{f.name} (default {f.default!r}): {f.metadata['help'].splitlines()[0]}")
        return 0
    from ..api import unlearn
    from ..errors import UserError

    if not args.recipe:
        raise UserError("give a recipe: a YAML path or a shipped recipe name")
    res = unlearn(str(resolve_recipe(args.recipe)), **_pairs(args.overrides))
    m = res.metrics
    if m:
        print(f"forget perplexity {m.get('forget_perplexity', float('nan')):.3g}, "
              f"retain perplexity {m.get('retain_perplexity', float('nan')):.3g}, "
              f"MIA AUC {m.get('mia_auc', float('nan')):.3f}")
    print(f"outputs: {res.output_dir}")
    return 0


def _pairs(overrides):
    from ..config import parse_overrides

    return parse_overrides(overrides)

def add_parser(sub):
    from ..threads import add_argument as add_threads

    p = sub.add_parser("unlearn", help="run one unlearning recipe",
                       description="Run a recipe (YAML path or the name of a shipped recipe, e.g. npo). "
                                   "Any option (see `llm-forget unlearn --options`) can follow as --key value "
                                   "and overrides the recipe.")
    p.add_argument("recipe", nargs="?", help="recipe YAML, or a shipped recipe name (npo, grad_diff, ...)")
    p.add_argument("--options", action="store_true", help="list every option with its help and default")
    add_threads(p)
    p.set_defaults(run=run, accepts_overrides=True)


def run(args):
    from ..config import UnlearnConfig
    from ._options import recipe_options

    if args.options:
        print(recipe_options(UnlearnConfig))
        return 0
    from ..api import unlearn
    from ..config import parse_overrides
    from ..errors import UserError
    from ..recipes_index import resolve_recipe

    if not args.recipe:
        raise UserError("give a recipe: a YAML path or a shipped recipe name")
    res = unlearn(str(resolve_recipe(args.recipe)), **parse_overrides(args.overrides))
    m = res.metrics
    if m:
        mia = f"MIA AUC {m['mia_auc']:.3f}" if "mia_auc" in m else "MIA AUC not computed (no holdout set)"
        print(f"forget perplexity {m.get('forget_perplexity', float('nan')):.3g}, "
              f"retain perplexity {m.get('retain_perplexity', float('nan')):.3g}, {mia}")
    print(f"outputs: {res.output_dir}")
    return 0


def add_parser(sub):
    p = sub.add_parser("card", help="(re)generate a run folder's Hub model card README.md",
                       description="Write RUN_DIR/README.md from results.json, recipe.yaml and ledger.jsonl; "
                                   "--push-to-hub REPO uploads the model, card, ledger and results (online only).")
    p.add_argument("run_dir", help="a run folder (holds results.json)")
    p.add_argument("--push-to-hub", dest="push_to_hub", metavar="REPO", default=None, help="Hub repo id to upload to")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    p.set_defaults(run=run)


def run(args):
    from ..reporting.card import push_to_hub, write_card

    path = write_card(args.run_dir)
    print(f"model card: {path}")
    if args.push_to_hub:
        url = push_to_hub(args.run_dir, args.push_to_hub, private=args.private)
        print(f"uploaded: {url}")
    return 0

def add_parser(sub):
    p = sub.add_parser("ledger", help="check a run's tamper-evident deletion ledger",
                       description="llm-forget ledger verify PATH: check the hash chain of PATH's ledger.jsonl "
                                   "(a run folder, a model folder or the file) and that its last entry's model "
                                   "hash matches the weights on disk. Exit status 1 when anything was changed. "
                                   "llm-forget ledger show PATH: one line per entry.")
    p.add_argument("action", choices=["verify", "show"], help="verify or show")
    p.add_argument("path", help="run folder, model folder or ledger.jsonl")
    p.add_argument("--model", default=None, help="model folder to compare with (default: PATH/model or PATH)")
    p.set_defaults(run=run)


def run(args):
    from ..reporting import ledger

    if args.action == "show":
        for e in ledger.read(args.path):
            f = e.get("forgotten", {})
            print(f"{e.get('index')}\t{e.get('time')}\t{e.get('operation')}\t{e.get('kind')}\t{e.get('request_id')}\t"
                  f"{f.get('count')} rows\t{e.get('method')}\t{str(e.get('hash'))[:16]}")
        return 0
    v = ledger.verify(args.path, args.model)
    if v.ok:
        print(f"ok: {v.entries} entries, chain intact, weights match the last entry; head {v.head}")
        return 0
    for p in v.problems:
        print(f"FAILED: {p}")
    return 1

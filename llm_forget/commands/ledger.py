def add_parser(sub):
    p = sub.add_parser("ledger", help="check, prove and sign a run's deletion ledger",
                       description="verify PATH: hash chain, Ed25519 signatures, lineage and the model on disk "
                                   "(exit 1 when anything was changed; --trust KEY requires every entry signed "
                                   "by that key; --anchor HASH requires that earlier head in the chain). "
                                   "show PATH: one line per entry. keygen [FILE]: a new signing key (default: "
                                   "the per-user key). prove PATH --row ROW.json: the proof that one row was "
                                   "forgotten. check-proof PATH --row ROW.json --proof PROOF.json. migrate PATH: "
                                   "replace plain sha256 row hashes with keyed fingerprints and sign every entry.")
    p.add_argument("action", choices=["verify", "show", "keygen", "prove", "check-proof", "migrate"])
    p.add_argument("path", nargs="?", help="run folder, model folder or ledger.jsonl (keygen: the key file)")
    p.add_argument("--model", default=None, help="verify: model folder to compare with (default: PATH/model or PATH)")
    p.add_argument("--trust", action="append", default=None, metavar="KEY",
                   help="verify: a trusted public key (base64, ledger.pub or key file); repeatable")
    p.add_argument("--anchor", default=None, help="verify: a head hash published earlier that must be in the chain")
    p.add_argument("--row", default=None, help="prove / check-proof: JSON file holding the row")
    p.add_argument("--proof", default=None, help="check-proof: JSON file holding the proof")
    p.add_argument("--signing-key", dest="signing_key", default=None, help="migrate: key file to sign with")
    p.set_defaults(run=run)


def _json(path, what):
    import json
    from pathlib import Path

    from ..errors import UserError

    if not path:
        raise UserError(f"give --{what} FILE")
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {what} {path}: {e}") from e
    if not isinstance(obj, dict):
        raise UserError(f"{path}: the {what} must be a JSON object")
    return obj


def run(args):
    import json

    from ..errors import UserError
    from ..reporting import keys, ledger, proofs

    if args.action == "keygen":
        key, path = keys.keygen(args.path)
        pub = keys.public_b64(key)
        print(f"signing key: {path}\npublic key: {pub} (id {keys.key_id(pub)})")
        return 0
    if not args.path:
        raise UserError(f"usage: llm-forget ledger {args.action} PATH")
    if args.action == "show":
        for e in ledger.read(args.path):
            f = e.get("forgotten", {})
            who = keys.key_id(e["signer"]) if e.get("signer") else "unsigned"
            print(f"{e.get('index')}\t{e.get('time')}\t{e.get('operation')}\t{e.get('kind')}\t{e.get('request_id')}\t"
                  f"{f.get('count')} rows\t{e.get('method')}\t{str(e.get('hash'))[:16]}\t{who}")
        return 0
    if args.action == "prove":
        print(json.dumps(proofs.prove(args.path, _json(args.row, "row"))))
        return 0
    if args.action == "check-proof":
        print(f"ok: {proofs.check(args.path, _json(args.row, 'row'), _json(args.proof, 'proof'))}")
        return 0
    if args.action == "migrate":
        r = proofs.migrate(args.path, args.signing_key)
        print(f"migrated {r['entries']} entries ({r['rows']} row hashes now keyed), signed; "
              f"head {r['old_head']} -> {r['new_head']}")
        return 0
    trust = [k for t in args.trust for k in keys.read_public(t)] if args.trust else None
    v = ledger.verify(args.path, args.model, trust, args.anchor)
    for n in v.notes:
        print(f"note: {n}")
    if not v.ok:
        for p in v.problems:
            print(f"FAILED: {p}")
        return 1
    if v.unsigned == v.entries:
        how = "UNSIGNED (tamper-evident against naive edits only)"
    else:
        how = (f"signatures valid ({v.entries - v.unsigned} signed, {v.unsigned} unsigned) by key "
               + ", ".join(v.signers) + ("" if trust else "; pass --trust KEY to pin the signer"))
    print(f"ok: {v.entries} entries, chain intact, {how}, model matches the last entry; head {v.head}")
    return 0

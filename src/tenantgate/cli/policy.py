"""Policy authors' commands: ``validate``, ``fmt`` and ``explain`` (also ``check --explain``).

They need no server and use the same code as the server: the compiler for validation and formatting, and
``DecisionPoint.decide()`` for explain.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tenantgate.cli.verdict import settle
from tenantgate.core.cedar_text import escape_unprintable
from tenantgate.errors import ConfigError, PolicyError
from tenantgate.policy.tenantdirs import TENANTS_DIR

EXIT_OK, EXIT_ERROR, EXIT_DENY, EXIT_INVALID_POLICIES = 0, 1, 2, 3


def add_commands(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None],
                 request_args: Callable[[argparse.ArgumentParser], None]) -> None:
    validate = sub.add_parser("validate", help="validate policies against the schema")
    config_arg(validate)
    validate.add_argument("--policies", default=None, metavar="DIR")
    validate.add_argument("--schema", default=None, metavar="FILE")
    validate.add_argument("--tenant", action="append", default=[], metavar="TENANT",
                          help="also print the policy version this tenant's decisions carry (repeatable)")
    validate.set_defaults(handler=_validate)

    fmt = sub.add_parser("fmt", help="format Cedar policy files (Cedar's own formatter)")
    config_arg(fmt)
    fmt.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (default: the policy dir)")
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file is not formatted")
    fmt.set_defaults(handler=_fmt)

    explain_cmd = sub.add_parser("explain", help="show every step of a decision (in-process)")
    config_arg(explain_cmd)
    request_args(explain_cmd)
    explain_cmd.add_argument("--json", action="store_true", help="print the steps as JSON")
    explain_cmd.set_defaults(handler=lambda args: explain(args, as_json=args.json))


def _settings(args: argparse.Namespace) -> Any:
    from tenantgate import config

    return config.load(args.config)


def _validate(args: argparse.Namespace) -> int:
    from tenantgate.app import tenant_limits
    from tenantgate.core.compiler import DEFAULT_TENANT_LIMITS
    from tenantgate.core.request import TENANT_ID, is_tenant_id
    from tenantgate.policy import load_policies

    for tenant in args.tenant:
        if not is_tenant_id(tenant):
            # Review finding: a version was printed for a name no tenant can have, as if decisions carried it.
            raise ConfigError(f"--tenant {escape_unprintable(tenant)!r} is not a tenant id ({TENANT_ID.pattern})")
    # The config's limits on a tenant's files apply with --policies too, when there is a config to read.
    settings = _settings(args) if not args.policies or args.config else None
    if args.policies:
        policy_dir, schema = args.policies, args.schema
    else:
        assert settings is not None
        policy_dir, schema = settings.policies.dir, args.schema or settings.policies.schema_file
    try:
        limits = tenant_limits(settings) if settings else DEFAULT_TENANT_LIMITS
        compiled = load_policies(policy_dir, schema, limits=limits)
    except PolicyError as err:
        settle(EXIT_INVALID_POLICIES)
        # Escaped: diagnostics quote entity ids and policy text a tenant wrote (review finding: an id with
        # ESC [2K and CR could repaint the terminal and hide the problems above it).
        for diag in err.diagnostics or ():
            print(escape_unprintable(f"{os.path.join(policy_dir, diag.path)}{str(diag)[len(diag.path):]}"))
        if not err.diagnostics:
            print("\n".join(escape_unprintable(line) for line in str(err).split("\n")))
        print(f"invalid: {len(err.diagnostics) or 1} problem(s)", file=sys.stderr)
        return EXIT_INVALID_POLICIES
    print(f"valid: {compiled.total_policies - 1} policies ({len(compiled.tenants)} tenant partitions) in "
          f"{policy_dir} (version {compiled.version})")
    for tenant in args.tenant:
        print(f"tenant {escape_unprintable(tenant)}: decisions carry version {compiled.version_for(tenant)}")
    return EXIT_OK


def _fmt(args: argparse.Namespace) -> int:
    from tenantgate.core.compiler import format_policy_text

    roots = [Path(p) for p in args.paths] or [Path(_settings(args).policies.dir)]
    files: list[Path] = []
    for root in roots:
        if root.is_dir():
            files += sorted(p for p in root.rglob("*.cedar") if p.is_file())
        elif root.is_file():
            files.append(root)
        else:
            raise ConfigError(f"no such file or directory: {root}")
    # INVARIANT: fmt reads and writes a tenant's file only inside that tenant's directory, as the loader reads it
    # (review finding: `tenants/acme/zz.cedar -> ../globex/g.cedar` made the operator's fmt rewrite globex's file,
    # and a link to any other file printed its first unexpected token).
    linked_out = [path for path in files if _outside_its_tenant(path)]
    for path in linked_out:
        print(f"{path}: not formatted: resolves outside its tenant's directory (a tenant's files must be inside "
              "tenants/<tenant>/)", file=sys.stderr)
    if linked_out:
        return EXIT_INVALID_POLICIES
    unformatted = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            formatted = format_policy_text(text)
        except UnicodeDecodeError:
            print(f"{path}: not UTF-8 text", file=sys.stderr)  # review finding: a traceback
            return EXIT_INVALID_POLICIES
        except OSError as err:
            raise ConfigError(f"cannot read {path}: {err.strerror or err}") from err
        except PolicyError as err:
            print(f"{path}: {err}", file=sys.stderr)
            return EXIT_INVALID_POLICIES
        if not formatted.endswith("\n"):
            formatted += "\n"
        if formatted != text:
            unformatted.append(path)
            if not args.check:
                path.write_text(formatted, encoding="utf-8")
    code = settle(EXIT_ERROR if args.check and unformatted else EXIT_OK)
    for path in unformatted:
        print(f"{'would reformat' if args.check else 'reformatted'} {path}")
    print(f"{len(files)} file(s), {len(unformatted)} {'not formatted' if args.check else 'reformatted'}",
          file=sys.stderr)
    return code


def _outside_its_tenant(path: Path) -> bool:
    """True when ``path`` lies below a ``tenants/<tenant>/`` directory (as written) but resolves outside it."""
    parts = path.absolute().parts
    resolved = path.resolve()
    for i, part in enumerate(parts[:-2]):
        if part == TENANTS_DIR and not resolved.is_relative_to(Path(*parts[:i + 2]).resolve()):
            return True
    return False


def explain(args: argparse.Namespace, *, as_json: bool) -> int:
    """Decide in-process with a trace and print each step, the determining and erroring policies with their
    file:line, and the final reason. Exit 0 allow, 2 deny."""
    import dataclasses

    from tenantgate import app as application
    from tenantgate.cli.main import check_input, in_process_settings

    check = dataclasses.replace(check_input(args), explain=True)
    built = application.build(in_process_settings(args))
    try:
        result = built.pdp.decide(check)
        compiled = built.policies.current().compiled
    finally:
        application.close(built)

    def where(policy_id: str) -> str:
        loc = compiled.locate(policy_id, check.resource.tenant)
        return f"{loc.path}:{loc.line}" if loc else "?"

    steps: list[dict[str, Any]] = [{"step": t.step, "outcome": t.outcome, "detail": t.detail,
              "policies": [{"id": p, "at": where(p)} for p in t.policy_ids], "errors": list(t.errors)}
             for t in result.trace]
    code = settle(EXIT_OK if result.allowed else EXIT_DENY)
    if as_json:
        print(json.dumps({"decision": result.decision.value, "reason": result.reason.value,
                          "message": result.message, "decision_id": result.decision_id,
                          "policy_version": result.audit.policy_version, "steps": steps}, indent=2))
    else:
        print(f"{result.decision.value} ({result.reason.value}): {result.message}")
        print(f"decision {result.decision_id}, policies {result.audit.policy_version}")
        for step in steps:
            mark = {"pass": "ok  ", "deny": "DENY", "info": "    "}.get(step["outcome"], "    ")
            print(f"  {mark} {step['step']:<9} {step['detail']}")
            label = "determining" if step["step"] == "cedar" and result.reason.value != "internal_error" else "policy"
            for pol in step["policies"]:
                print(f"         {label}: {pol['id']}  ({pol['at']})")
            for error in step["errors"]:
                print(f"         error: {error}")
    return code

#!/usr/bin/env python3
"""Writes meta-edgefleet's edgefleet-agent-crates.inc from Cargo.lock: one crate:// SRC_URI entry
and its sha256 per crates.io package, as the cargo-update-recipe-crates class would
(`bitbake -c update_crates edgefleet-agent`), so the recipe builds offline from the layer alone.

    firmware-images/yocto/update-crates.py           # rewrite the file
    firmware-images/yocto/update-crates.py --check   # exit 1 when it is not current (CI)
"""
import pathlib
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "firmware-images/yocto/meta-edgefleet/recipes-edgefleet/edgefleet-agent/edgefleet-agent-crates.inc"
REGISTRY = "registry+https://github.com/rust-lang/crates.io-index"


def render() -> str:
    lock = tomllib.loads((ROOT / "Cargo.lock").read_text())
    packages = sorted(
        (p for p in lock["package"] if p.get("source") == REGISTRY),
        key=lambda p: (p["name"], p["version"]),
    )
    lines = [
        "# Generated from Cargo.lock by firmware-images/yocto/update-crates.py; do not edit.",
        "# Every crates.io package of the workspace, fetched by bitbake's crate:// fetcher.",
        'SRC_URI += " \\',
    ]
    lines += [f"    crate://crates.io/{p['name']}/{p['version']} \\" for p in packages]
    lines.append('"')
    lines.append("")
    lines += [f'SRC_URI[{p["name"]}-{p["version"]}.sha256sum] = "{p["checksum"]}"' for p in packages]
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if sys.argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is not current: run firmware-images/yocto/update-crates.py", file=sys.stderr)
            return 1
        return 0
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({text.count('crate://')} crates)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

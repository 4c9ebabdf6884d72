"""An image's SBOM (CycloneDX JSON, as grype writes it in the same scan) summarised for the checklist's report.

Pure, unit-tested on a document the real grype 0.121.2 wrote (tests/data/grype/). What is read:
`bomFormat`/`specVersion`, `metadata.component` (the image) and `components[]`: `name`, `version`, `type`
(CycloneDX's: library, application, operating-system...) and syft's package type, which is more telling
(python, deb, apk, go-module), from the `syft:package:type` property when there is one.

A full SBOM of a real image runs to megabytes; a Prefect artifact is for people to read, so the artifact shows
the summary (counts by type and the first packages), and the document itself is kept as the check's evidence
only when it is small, else as a file whose path the evidence and the artifact name.
"""

from __future__ import annotations

from typing import Any

SMALL_SBOM_BYTES = 32 * 1024  # kept whole in the check's evidence up to this size
PACKAGES_SHOWN = 50  # packages listed per image in the evidence and the artifact; the counts are always complete


class NotAnSbom(ValueError):
    """Not a CycloneDX JSON document."""


def _package_type(component: dict[str, Any]) -> str:
    for prop in component.get("properties") or []:
        if isinstance(prop, dict) and prop.get("name") == "syft:package:type" and prop.get("value"):
            return str(prop["value"])
    return str(component.get("type") or "unknown")


def summarise(doc: Any) -> dict[str, Any]:
    """{"format", "image", "components" (packages, counted), "files" (file components, counted), "by_type"
    {package type: count}, "packages" [{name, version, type}] (the first PACKAGES_SHOWN, by type and name)}"""
    if (
        not isinstance(doc, dict)
        or doc.get("bomFormat") != "CycloneDX"
        or not isinstance(doc.get("components", []), list)
    ):
        raise NotAnSbom("not a CycloneDX JSON document (bomFormat is not CycloneDX)")
    components = [c for c in doc.get("components") or [] if isinstance(c, dict)]
    files = [c for c in components if c.get("type") == "file"]  # syft's catalogued files, not packages
    packages = [
        {"name": str(c.get("name", "?")), "version": str(c.get("version", "")), "type": _package_type(c)}
        for c in components
        if c.get("type") != "file"
    ]
    packages.sort(key=lambda p: (p["type"], p["name"], p["version"]))
    by_type: dict[str, int] = {}
    for p in packages:
        by_type[p["type"]] = by_type.get(p["type"], 0) + 1
    subject = (doc.get("metadata") or {}).get("component") or {}
    image = f"{subject.get('name', '')}:{subject.get('version', '')}".strip(":")
    return {
        "format": f"CycloneDX {doc.get('specVersion', '?')}",
        "image": image,
        "components": len(packages),
        "files": len(files),
        "by_type": dict(sorted(by_type.items())),
        "packages": packages[:PACKAGES_SHOWN],
    }


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(sboms: dict[str, dict[str, Any]], title: str) -> str:
    """The SBOM artifact: per image, the package count by type, where the full document is, the first packages."""
    lines = [f"## SBOM: {title}", ""]
    if not sboms:
        return "\n".join([*lines, "No SBOM was written (the scan did not run).", ""])
    for image, s in sboms.items():
        types = ", ".join(f"{t} {n}" for t, n in s["by_type"].items()) or "none"
        lines += [f"### `{_cell(image)}`", "", f"{s['components']} component(s) ({types}); {s['format']}."]
        if s.get("path"):
            lines.append(f"Full document: `{_cell(s['path'])}`")
        elif s.get("document") is not None:
            lines.append("Full document: in the vulnerabilities check's evidence (`sbom`).")
        lines += ["", "| name | version | type |", "|---|---|---|"]
        lines += [f"| {_cell(p['name'])} | {_cell(p['version'])} | {_cell(p['type'])} |" for p in s["packages"]]
        if s["components"] > len(s["packages"]):
            lines.append(f"| … {s['components'] - len(s['packages'])} more | | |")
        lines.append("")
    return "\n".join(lines)

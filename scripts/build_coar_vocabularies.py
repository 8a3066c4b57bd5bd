"""Builds usage_stats/data/coar_vocabularies.json from the COAR vocabularies' N-Triples.

The COAR vocabularies (resource types, access rights, version types; CC0, maintained in
github.com/coar-repositories/coar-vocabularies-website under webroot/content/<name>/<name>.nt)
carry the labels repositories of the network really write, in Spanish and Portuguese as well
as English. Only what the metadata mapping reads is kept (concept URIs, English preferred label,
en/es/pt labels, broader concepts), so the package ships a small file and no RDF library.

Run: python scripts/build_coar_vocabularies.py <directory with the three .nt files>
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

_LANGUAGES = ("en", "es", "pt")
_TRIPLE = re.compile(r'^<([^>]+)> <([^>]+)> (?:<([^>]+)>|"((?:[^"\\]|\\.)*)"(?:@([\w-]+))?) \.$')
_SKOS = "http://www.w3.org/2004/02/skos/core#"
_EXPIRES = "schema#expires"


def _unescape(text: str) -> str:
    return json.loads(f'"{text}"')


def read(path: Path, namespace: str) -> dict[str, dict[str, object]]:
    """Concepts of one vocabulary, keyed by URI; deprecated ones are marked, not dropped,
    because records written under older guideline versions still carry them."""
    concepts: dict[str, dict[str, object]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _TRIPLE.match(line.strip())
        if not match or not match.group(1).startswith(namespace):
            continue
        subject, predicate, obj, literal, lang = match.groups()
        tail = subject[len(namespace) :]
        if not tail or tail.startswith(("scheme", "schema")) or "/" in tail:
            continue
        concept = concepts.setdefault(
            subject,
            {"label": None, "pref": [], "alt": [], "broader": [], "deprecated": False, "in": 0},
        )
        if predicate == _SKOS + "inScheme":
            concept["in"] = 1
        elif predicate == _SKOS + "broader" and obj:
            concept["broader"].append(obj)
        elif predicate.endswith(_EXPIRES):
            concept["deprecated"] = True
        elif literal is not None and lang in _LANGUAGES:
            text = _unescape(literal)
            if predicate == _SKOS + "prefLabel":
                concept["pref"].append(text)
                if lang == "en":
                    concept["label"] = text
            elif predicate == _SKOS + "altLabel":
                concept["alt"].append(text)
    # A concept outside the scheme (a stray test entry of the published file) is not one.
    return {
        uri: {k: v for k, v in c.items() if k != "in"}
        for uri, c in sorted(concepts.items())
        if c["label"] and c["in"]
    }


def main(directory: str) -> None:
    root = Path(directory)
    data = {
        "source": "https://github.com/coar-repositories/coar-vocabularies-website (CC0-1.0)",
        "resource_types": read(root / "resource_types.nt", "http://purl.org/coar/resource_type/"),
        "access_rights": read(root / "access_rights.nt", "http://purl.org/coar/access_right/"),
        "version_types": read(root / "version_types.nt", "http://purl.org/coar/version/"),
    }
    for concepts in data.values():
        if isinstance(concepts, dict):
            for concept in concepts.values():
                for key in ("pref", "alt", "broader"):
                    concept[key] = sorted(set(concept[key]))
    out = Path(__file__).resolve().parents[1] / "usage_stats" / "data" / "coar_vocabularies.json"
    out.write_text(json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n")
    print(f"{out}: " + ", ".join(f"{k} {len(v)}" for k, v in data.items() if isinstance(v, dict)))


if __name__ == "__main__":
    main(sys.argv[1])

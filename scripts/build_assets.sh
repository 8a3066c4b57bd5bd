#!/usr/bin/env bash
# The dashboard's browser libraries and map data, installed from the npm registry (versions
# pinned by frontend/package-lock.json) and copied, with their licences, into
# usage_stats/web/static/vendor, which the web application serves itself: the dashboard works
# on a machine with no internet and never asks a CDN. The country list (ISO 3166 alpha-2 to
# the numeric codes the world map uses) comes from pycountry, from PyPI.
#   PYTHON   the interpreter with usage_stats installed (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=usage_stats/web/static/vendor
modules=frontend/node_modules

# swagger-ui-dist pulls @scarf/scarf, whose install script reports downloads: not from here.
export SCARF_ANALYTICS=false
command -v npm >/dev/null || { echo "build_assets: npm is needed (Node.js with npm)" >&2; exit 1; }
npm ci --prefix frontend --no-audit --no-fund --loglevel=error

mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d "${out}.XXXX")
trap 'rm -rf "$tmp"' EXIT
copy() { # copy <package> <file in package> <name in vendor>
  cp "$modules/$1/$2" "$tmp/$3"
  for licence in LICENSE LICENSE.md; do
    [[ -f $modules/$1/$licence ]] && cp "$modules/$1/$licence" "$tmp/$1.LICENSE" && break
  done
  echo "$1 $(node -p "require('./$modules/$1/package.json').version") $3" >> "$tmp/VERSIONS"
}
copy chart.js dist/chart.umd.min.js chart.umd.min.js
copy d3-array dist/d3-array.min.js d3-array.min.js
copy d3-geo dist/d3-geo.min.js d3-geo.min.js
copy topojson-client dist/topojson-client.min.js topojson-client.min.js
copy world-atlas countries-110m.json countries-110m.json
# /docs (Swagger UI) from this origin too: FastAPI's default page loads it from a CDN
copy swagger-ui-dist swagger-ui-bundle.js swagger-ui-bundle.js
copy swagger-ui-dist swagger-ui.css swagger-ui.css
"$python" - "$tmp/countries.json" <<'PY'
import json
import sys

import pycountry

countries = {c.alpha_2: {"numeric": c.numeric, "name": c.name} for c in pycountry.countries}
with open(sys.argv[1], "w") as out:
    json.dump(countries, out, separators=(",", ":"), sort_keys=True)
PY
rm -rf "$out"
mv "$tmp" "$out"
chmod 755 "$out"
trap - EXIT
echo "dashboard assets: $(wc -l < "$out/VERSIONS") libraries and countries.json in $out"

#!/usr/bin/env bash
# The pages' message catalogues (usage_stats/web/i18n.py): extract every message of the
# templates, page scripts and web/i18n.py into messages.pot, then merge it into the es and
# pt catalogues (new messages arrive untranslated; test_i18n fails until they are written).
set -euo pipefail
cd "$(dirname "$0")/.."
PYBABEL="${PYBABEL:-.venv/bin/pybabel}"
LOCALES=usage_stats/web/locales
"$PYBABEL" extract -F babel.cfg -k _ -k gettext -k pgettext:1c,2 --no-location --sort-output \
  --project usage-stats --copyright-holder "usage-stats" -o "$LOCALES/messages.pot" .
for lang in es pt; do
  if [ -f "$LOCALES/$lang/LC_MESSAGES/messages.po" ]; then
    "$PYBABEL" update -i "$LOCALES/messages.pot" -d "$LOCALES" -l "$lang" --no-fuzzy-matching --ignore-obsolete
  else
    "$PYBABEL" init -i "$LOCALES/messages.pot" -d "$LOCALES" -l "$lang"
  fi
done

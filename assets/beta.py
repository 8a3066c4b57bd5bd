"""The Dagster features in beta in this release that the project is built on.

The single-run backfill policy (every usage asset) and source code references (the UI's
link from an asset to its code) are marked beta in Dagster 1.13; tests pin the behaviour
the project relies on, so their warnings at every start and in every run log are noise.
Imported before any asset is defined.
"""

import warnings

from dagster import BetaWarning

warnings.filterwarnings(
    "ignore",
    category=BetaWarning,
    message=r"(Parameter `backfill_policy`|Function `with_source_code_references`"
    r"|Class `(LocalFileCodeReference|CodeReferencesMetadataValue)`)",
)

"""Item metadata harvested over OAI-PMH: what each counted item is (issue 14).

- `schema`: the columns of the harvested state (one row per item) and of its change log;
- `vocabularies`: COAR resource types and access rights, languages, grants, from the many
  spellings repositories write, to the values COUNTER reports and breakdowns need;
- the harvester and the mapping of `oai_dc` and the richer formats build rows of `schema`.
"""
